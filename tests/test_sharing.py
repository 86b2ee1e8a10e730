"""SHARP: which layers share, that the weights really are shared, and that both recovery stages recover."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import (
    FAST,
    VOCAB,
    assert_same_logits,
    assert_same_training,
    counting_tokens,
    positional_and_keyword,
    tiny_llama,
)
from transformers import GPT2Config, GPT2LMHeadModel

from streamline_lib.methods.sharing import layers_to_share, reference_layers, sharing_pattern, sharp
from streamline_lib.methods.sparsity import parameter_budget
from streamline_lib.methods.training import TrainConfig

SLW = TrainConfig(**FAST)
SFT = TrainConfig(**{**FAST, "loss": "lm"})


def mlp_size(model) -> int:
    return sum(p.numel() for p in model.model.layers[0].mlp.parameters())


def test_pattern_takes_every_second_layer_from_the_top_then_the_rest():
    assert sharing_pattern(30, 12) == list(range(7, 30, 2))
    assert sharing_pattern(6, 3) == [1, 3, 5]
    assert sharing_pattern(6, 5) == [1, 2, 3, 4, 5]  # then the layers in between: groups share one MLP
    for k in (0, 6):
        with pytest.raises(ValueError, match=r"use 1 <= k <= 5"):
            sharing_pattern(6, k)


def test_references_are_the_nearest_kept_layer_below():
    assert reference_layers([3, 5], 6) == [2, 4]
    assert reference_layers([2, 3, 5], 6) == [1, 1, 4]  # 3 reuses 1 through the replaced 2
    with pytest.raises(ValueError, match="layer 0 has no layer below"):
        reference_layers([0, 2], 6)
    with pytest.raises(ValueError, match="each once"):
        reference_layers([2, 2], 6)


def test_direct_sharing_holds_the_same_tensors_and_stores_fewer_parameters():
    dense = tiny_llama()
    before = copy.deepcopy(dense.state_dict())
    result = sharp(dense, [3, 5], rank=0)
    layers = result.model.model.layers
    assert result.references == (2, 4) and result.recovery_parameters == 0 and result.sft_result is None
    for index, reference in zip(result.layers, result.references):
        for (name, param), (_, source) in zip(layers[index].mlp.named_parameters(),
                                              layers[reference].mlp.named_parameters()):
            assert param is source, name  # one tensor, stored once
    assert parameter_budget(dense).total - parameter_budget(result.model).total == 2 * mlp_size(dense)
    assert all(torch.equal(v, before[k]) for k, v in dense.state_dict().items())  # the dense model is unchanged
    tokens = counting_tokens(4)
    with torch.no_grad():
        assert not torch.allclose(result.model(tokens).logits, dense(tokens).logits)


def test_untrained_recovery_is_direct_sharing_and_adds_its_low_rank_parameters():
    dense = tiny_llama()
    direct = sharp(dense, [3, 5], rank=0)
    recovered = sharp(dense, [3, 5], rank=2)
    # gate and up (32 -> 64) and down (64 -> 32) each get A (2 x in) and B (out x 2): 3 * 2 * (32 + 64) per layer
    assert recovered.recovery_parameters == 2 * 3 * 2 * (32 + 64)
    assert parameter_budget(recovered.model).total == parameter_budget(direct.model).total + 2 * 3 * 2 * 96
    tokens = counting_tokens(4)
    with torch.no_grad():  # B starts at zero, so the untrained deltas change nothing
        torch.testing.assert_close(recovered.model(tokens).logits, direct.model(tokens).logits)


def test_warm_up_recovers_a_low_rank_difference_between_neighbours():
    """Layer 3's MLP is layer 2's plus a rank-1 change: a rank-2 recovery can learn it almost exactly."""
    dense = tiny_llama()
    torch.manual_seed(0)
    with torch.no_grad():
        layers = dense.model.layers
        layers[3].mlp.load_state_dict(layers[2].mlp.state_dict())
        layers[3].mlp.down_proj.weight.add_(torch.randn(32, 1) @ torch.randn(1, 64) * 0.5)
    config = TrainConfig(**{**FAST, "epochs": 100, "lr": 1e-2})
    result = sharp(dense, [3], rank=2, slw_sequences=counting_tokens(), slw_config=config)
    (warm,) = result.slw_results
    assert warm.loss == "mse" and warm.baseline_val_loss > 0
    assert warm.best_val_loss < 0.05 * warm.baseline_val_loss


def test_fine_tuning_lowers_the_next_token_loss_and_everything_is_deterministic():
    dense = tiny_llama()
    tokens = counting_tokens()
    first = sharp(dense, [2, 4], rank=2, slw_sequences=tokens, slw_config=SLW, sft_sequences=tokens, sft_config=SFT)
    again = sharp(dense, [2, 4], rank=2, slw_sequences=tokens, slw_config=SLW, sft_sequences=tokens, sft_config=SFT)
    assert len(first.slw_results) == 2
    assert first.sft_result.loss == "lm"
    assert first.sft_result.best_val_loss < first.sft_result.baseline_val_loss
    assert first.sft_result.val_losses == again.sft_result.val_losses
    assert [r.val_losses for r in first.slw_results] == [r.val_losses for r in again.slw_results]
    with torch.no_grad():
        torch.testing.assert_close(first.model(tokens[:2]).logits, again.model(tokens[:2]).logits, rtol=0, atol=0)
    assert all(p.requires_grad for p in first.model.parameters())  # given back like the model passed in


def test_cache_returns_the_trained_recovery_without_training(tmp_path, monkeypatch):
    dense = tiny_llama()
    tokens = counting_tokens()
    kwargs = dict(rank=2, slw_sequences=tokens, slw_config=SLW, sft_sequences=tokens, sft_config=SFT, cache=tmp_path)
    trained = sharp(dense, [2, 4], **kwargs)

    def no_training(*args, **kw):
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr("streamline_lib.methods.sharing.train_module", no_training)
    monkeypatch.setattr("streamline_lib.methods.sharing.train_adapters", no_training)
    cached = sharp(dense, [2, 4], **kwargs)
    assert cached.sft_result == trained.sft_result and cached.slw_results == trained.slw_results
    with torch.no_grad():
        torch.testing.assert_close(cached.model(tokens[:2]).logits, trained.model(tokens[:2]).logits)


def test_layers_to_share_saves_the_sparsity_net_of_the_recovery_as_the_built_model_does():
    dense = tiny_llama()
    budget = parameter_budget(dense)
    for sparsity, count, rank in [(0.25, "total", 2), (0.4, "layers", 2), (0.25, "total", 0), (0.3, "layers", 8)]:
        k = layers_to_share(dense, sparsity, rank, count)
        counted = budget.total if count == "total" else budget.layers

        def saved(shared: int) -> int:  # parameters saved by the built model
            return budget.total - parameter_budget(sharp(dense, sharing_pattern(6, shared), rank=rank).model).total

        assert saved(k) == k * saved(1)  # measured on the built model: each shared layer saves the same
        # the nearest whole number of layers to the target (ties round up)
        assert abs(saved(k) - sparsity * counted) <= saved(1) / 2 or k == 1
    with pytest.raises(ValueError, match="sparsity=1.5 must be a fraction"):
        layers_to_share(dense, 1.5, 2)
    with pytest.raises(ValueError, match="count='all' is not one of"):
        layers_to_share(dense, 0.25, 2, "all")
    with pytest.raises(ValueError, match="rank=32: the recovery parameters would be as large"):
        layers_to_share(dense, 0.25, 32)


def test_bad_input_is_refused():
    dense = tiny_llama()
    with pytest.raises(ValueError, match=r"slw_config.loss='lm': pass TrainConfig\(loss='mse'"):
        sharp(dense, [2], slw_config=SFT)
    with pytest.raises(ValueError, match=r"sft_config.loss='mse': pass TrainConfig\(loss='lm'"):
        sharp(dense, [2], sft_config=SLW)
    with pytest.raises(ValueError, match="rank=-1 is invalid"):
        sharp(dense, [2], rank=-1)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4))
    with pytest.raises(ValueError, match="no MLP of nn.Linear projections"):
        sharp(gpt2, [2])


def test_settings_after_the_layers_still_work_by_position_with_a_deprecation_warning():
    dense, tokens = tiny_llama(), counting_tokens()
    moved = dict(rank=2, alpha=4.0, slw_sequences=tokens[:8], slw_config=SLW, sft_sequences=tokens, sft_config=SFT)
    old, new = positional_and_keyword(sharp, (dense, [2, 4]), moved)
    assert old.rank == new.rank and old.recovery_parameters == new.recovery_parameters
    assert_same_training((*old.slw_results, old.sft_result), (*new.slw_results, new.sft_result))
    assert_same_logits(old.model, new.model, tokens[:2])
