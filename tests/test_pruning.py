"""prune() returns a new pruned model for every architecture and replacement; iterative pruning."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import (
    ARCHS,
    FAST,
    LAYERS,
    assert_same_logits,
    assert_same_training,
    batch,
    build,
    counting_tokens,
    greedy,
    logits,
    positional_and_keyword,
    random_tokens,
    skip_with_hooks,
    tiny_llama,
)
from torch import nn

from streamline_lib.architecture.layers import get_layers, num_layers, remove_layers
from streamline_lib.methods.linear_replacement import fit_linear_map, fold_linear_map
from streamline_lib.methods.pruning import prune, prune_iterative, prune_layers, prune_per_layer, prune_to_sparsity
from streamline_lib.methods.replacement import REPLACEMENTS, ResidualFFN
from streamline_lib.methods.scoring import block_scores, collect_stats, score_blocks
from streamline_lib.methods.training import TrainConfig, train_replacement


def snapshot(model: nn.Module) -> tuple[dict, dict, list]:
    """Everything prune must leave alone: weights, config and the layer objects."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return state, model.config.to_dict(), list(get_layers(model))


def assert_unchanged(model: nn.Module, before: tuple[dict, dict, list]) -> None:
    state, config, layers = before
    assert model.config.to_dict() == config
    assert list(get_layers(model)) == layers
    assert model.state_dict().keys() == state.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


# Gemma 3 normalises its MLP output, so the linear map has nowhere to be folded (refused: test_linear_replacement).
CASES = [(model_type, kind) for model_type in ARCHS for kind in REPLACEMENTS
         if (model_type, kind) != ("gemma3_text", "linear")]


@pytest.mark.parametrize(("model_type", "kind"), CASES)
def test_prune_every_architecture_with_every_replacement(model_type, kind):
    dense = build(model_type)
    before = snapshot(dense)
    result = prune(dense, 1, 3, replacement=kind)
    model = result.model
    assert model is not dense and (result.start, result.n, result.replacement) == (1, 3, kind)
    assert result.train_result is None
    assert num_layers(model) == model.config.num_hidden_layers == LAYERS - 3 + (kind not in ("none", "linear"))
    inputs = batch()
    out = logits(model, inputs)
    assert out.shape == (inputs["attention_mask"].sum(), model.config.vocab_size)
    assert torch.isfinite(out).all()
    cached = greedy(model, inputs, use_cache=True)
    torch.testing.assert_close(cached, greedy(model, inputs, use_cache=False), rtol=0, atol=0)
    assert_unchanged(dense, before)


def test_plain_removal_is_skipping_the_block():
    dense = build("qwen2")
    result = prune(dense, 2, 3)
    skip_with_hooks(dense, range(2, 5))
    torch.testing.assert_close(logits(result.model, batch()), logits(dense, batch()))


@pytest.mark.parametrize("model_type", ARCHS)
def test_prune_layers_is_skipping_those_layers_and_runs_generate(model_type):
    dense = build(model_type)
    result = prune_layers(dense, [4, 1, 3])  # any order, not neighbours
    assert result.removed_layers == (1, 3, 4) and result.n == 3 and result.start is None
    assert num_layers(result.model) == LAYERS - 3 == result.model.config.num_hidden_layers
    assert num_layers(dense) == LAYERS  # the dense model is unchanged
    skip_with_hooks(dense, [1, 3, 4])
    torch.testing.assert_close(logits(result.model, batch()), logits(dense, batch()))
    torch.testing.assert_close(greedy(result.model, batch(), use_cache=True),
                               greedy(result.model, batch(), use_cache=False))


def test_prune_layers_of_one_block_says_where_it_starts_and_refuses_bad_sets():
    dense = build("llama")
    assert prune_layers(dense, [2, 3]).start == 2
    for layers, message in [([], "is empty"), ([1, 1], "more than once"), ([LAYERS], "run outside"),
                            (list(range(LAYERS)), "leaves no model")]:
        with pytest.raises(ValueError, match=message):
            prune_layers(dense, layers)


def test_replacement_parameters():
    dense = build("llama")
    assert prune(dense, 1, 2, replacement="none").replacement_parameters == 0
    relu = prune(dense, 1, 2, replacement="ffn_relu")
    assert relu.replacement_parameters == 32 + 2 * 32 * 128 + 128 + 32  # norm, two projections, biases
    layer = sum(p.numel() for p in get_layers(dense)[1].parameters())
    assert prune(dense, 1, 2, replacement="layer").replacement_parameters == layer


def test_prune_trains_against_the_dense_model_and_leaves_it_alone():
    dense = tiny_llama()
    before = snapshot(dense)
    result = prune(dense, 2, 3, replacement="ffn_relu", train_sequences=random_tokens(),
                   train_config=TrainConfig(**FAST))
    assert result.train_result.best_val_loss < result.train_result.baseline_val_loss
    assert isinstance(get_layers(result.model)[2], ResidualFFN)
    assert_unchanged(dense, before)


def test_cached_training_returns_the_same_replacement_and_retrains_on_any_change(tmp_path, monkeypatch):
    import streamline_lib.methods.pruning as pruning

    dense, tokens, config = tiny_llama(), random_tokens(), TrainConfig(**FAST)
    trained = []
    monkeypatch.setattr(pruning, "train_replacement",
                        lambda *a, **k: trained.append(1) or train_replacement(*a, **k))
    first = prune(dense, 2, 3, replacement="ffn", train_sequences=tokens, train_config=config, cache=tmp_path)
    again = prune(dense, 2, 3, replacement="ffn", train_sequences=tokens, train_config=config, cache=tmp_path)
    assert len(trained) == 1
    assert again.train_result == first.train_result
    with torch.no_grad():
        torch.testing.assert_close(again.model(tokens[:2]).logits, first.model(tokens[:2]).logits, rtol=0, atol=0)
    prune(dense, 2, 3, replacement="ffn", train_sequences=tokens[:-1], train_config=config,
          cache=tmp_path)  # other training tokens
    prune(dense, 2, 3, replacement="ffn", train_sequences=tokens, train_config=TrainConfig(**{**FAST, "lr": 2e-2}),
          cache=tmp_path)  # other settings
    prune(dense, 1, 3, replacement="ffn", train_sequences=tokens, train_config=config, cache=tmp_path)  # another block
    assert len(trained) == 4
    prune(dense, 2, 3, replacement="ffn", train_sequences=tokens,
          train_config=TrainConfig(**{**FAST, "progress": True}), cache=tmp_path)
    assert len(trained) == 4  # progress bars do not change the weights


def _truncate(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_bit_at_the_end(path) -> None:  # in the last weight's bytes, not the header: still loads
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_bit_at_the_end])
def test_damaged_cached_weights_are_trained_again(tmp_path, monkeypatch, damage):
    import streamline_lib.methods.pruning as pruning

    dense, tokens, config = tiny_llama(), random_tokens(), TrainConfig(**FAST)
    trained = []
    monkeypatch.setattr(pruning, "train_replacement",
                        lambda *a, **k: trained.append(1) or train_replacement(*a, **k))
    first = prune(dense, 2, 3, replacement="ffn", train_sequences=tokens, train_config=config, cache=tmp_path)
    (weights,) = tmp_path.glob("*.safetensors")
    damage(weights)
    with pytest.warns(RuntimeWarning, match=r"ignoring the cached trained weights .*safetensors: .*; training them again"):
        again = prune(dense, 2, 3, replacement="ffn", train_sequences=tokens, train_config=config, cache=tmp_path)
    assert len(trained) == 2, "trained again"
    with torch.no_grad():
        torch.testing.assert_close(again.model(tokens[:2]).logits, first.model(tokens[:2]).logits, rtol=0, atol=0)
    prune(dense, 2, 3, replacement="ffn", train_sequences=tokens, train_config=config, cache=tmp_path)
    assert len(trained) == 2, "the rewritten entry verifies"


def test_prune_with_lm_loss():
    dense = tiny_llama()
    result = prune(dense, 2, 3, replacement="layer", train_sequences=counting_tokens(),
                   train_config=TrainConfig(**{**FAST, "loss": "lm"}))
    assert result.train_result.loss == "lm"
    assert result.train_result.best_val_loss < result.train_result.baseline_val_loss


def test_none_ignores_training_sequences():
    result = prune(build("llama"), 1, 2, replacement="none", train_sequences=random_tokens(),
                   train_config=TrainConfig(**FAST))
    assert result.train_result is None


@pytest.mark.parametrize(
    ("start", "n", "kind", "message"),
    [
        (4, 3, "layer", "start=4 \\+ n=3 = 7 runs past the last layer; valid: n >= 1, 0 <= start, start \\+ n <= 6"),
        (-1, 2, "none", "start=-1 is negative"),
        (0, LAYERS, "none", "at least one layer must remain"),
        (1, 0, "ffn", "n=0 is the number of layers to replace"),
        (0, 2, "ffn_relu", "start=0"),
        (1, 2, "lora", "unknown replacement 'lora'"),
    ],
)
def test_bad_arguments_are_refused_before_copying(start, n, kind, message):
    dense = build("llama")
    before = snapshot(dense)
    with pytest.raises(ValueError, match=message):
        prune(dense, start, n, replacement=kind)
    assert_unchanged(dense, before)


def test_per_layer_trains_one_module_per_layer_on_its_own_pair():
    dense = tiny_llama()
    before = snapshot(dense)
    tokens = random_tokens()
    result = prune_per_layer(dense, 2, 3, replacement="ffn_relu", train_sequences=tokens,
                             train_config=TrainConfig(**FAST))
    assert_unchanged(dense, before)
    assert num_layers(result.model) == 6 and len(result.train_results) == 3
    modules = get_layers(result.model)[2:5]
    assert all(isinstance(m, ResidualFFN) for m in modules)
    assert result.replacement_parameters == 3 * prune(dense, 2, 3, replacement="ffn_relu").replacement_parameters
    for i, trained in enumerate(result.train_results):  # module i is what prune trains for layer 2 + i alone
        assert trained.best_val_loss < trained.baseline_val_loss
        single = prune(dense, 2 + i, 1, replacement="ffn_relu", train_sequences=tokens,
                       train_config=TrainConfig(**FAST))
        assert single.train_result.val_losses == trained.val_losses
        torch.testing.assert_close(get_layers(single.model)[2 + i].state_dict(), modules[i].state_dict())
    for p, q in zip(get_layers(result.model)[5].parameters(), get_layers(dense)[5].parameters()):
        assert torch.equal(p, q)  # layers outside the block are the dense ones


def test_per_layer_refuses_what_would_prune_nothing():
    dense = build("llama")
    for kind in ("layer", "none", "linear"):
        with pytest.raises(ValueError, match=f"replacement='{kind}' cannot be used per layer"):
            prune_per_layer(dense, 1, 2, replacement=kind, train_sequences=random_tokens())
    with pytest.raises(ValueError, match=r"start=4 \+ n=3 = 7 runs past the last layer"):
        prune_per_layer(dense, 4, 3, replacement="ffn", train_sequences=random_tokens())


def test_iterative_plain_removal_records_the_original_layers():
    dense = tiny_llama()
    before = snapshot(dense)
    calibration = random_tokens(8)
    result = prune_iterative(dense, 2, replacement="none", calibration_sequences=calibration,
                             train_config=TrainConfig(progress=False))
    assert num_layers(result.model) == 4 and len(result.removed) == len(set(result.removed)) == 2
    assert result.layer_map == tuple(i for i in range(6) if i not in result.removed)
    # round 1 picks the best single layer of the dense model, round 2 that of the model after round 1
    first = score_blocks(dense, calibration, n=1, progress=False).best_start
    assert result.starts[0] == result.removed[0] == first
    after_first = remove_layers(copy.deepcopy(dense), first, 1)
    assert result.starts[1] == score_blocks(after_first, calibration, n=1, progress=False).best_start
    # the final model is the dense one with those original layers removed
    expected = copy.deepcopy(dense)
    for index in sorted(result.removed, reverse=True):
        remove_layers(expected, index, 1)
    inputs = {"input_ids": calibration, "attention_mask": torch.ones_like(calibration)}
    torch.testing.assert_close(logits(result.model, inputs), logits(expected, inputs))
    assert_unchanged(dense, before)


def test_iterative_ffn_replaces_original_layers_only_and_trains_each_round():
    dense = tiny_llama()
    result = prune_iterative(dense, 3, replacement="ffn_relu", calibration_sequences=random_tokens(8),
                             train_sequences=random_tokens(), train_config=TrainConfig(**FAST))
    assert num_layers(result.model) == 6  # one FFN per replaced layer
    assert result.layer_map.count(None) == 3 and 0 not in result.starts
    assert sorted(result.removed) == sorted(set(range(6)) - {i for i in result.layer_map if i is not None})
    for start, trained in zip(result.starts, result.train_results):
        assert isinstance(get_layers(result.model)[start], ResidualFFN)
        assert trained.best_val_loss < trained.baseline_val_loss


def test_iterative_refuses_layer_and_too_many_rounds():
    dense = build("llama")
    with pytest.raises(ValueError, match="replacement='layer' cannot be used iteratively"):
        prune_iterative(dense, 2, replacement="layer", calibration_sequences=random_tokens(4))
    with pytest.raises(ValueError, match="n=6 rounds cannot prune a model with 6 layers; use 1 <= n <= 5"):
        prune_iterative(dense, 6, replacement="none", calibration_sequences=random_tokens(4))
    with pytest.raises(ValueError, match="unknown replacement"):
        prune_iterative(dense, 2, replacement="lora", calibration_sequences=random_tokens(4))


def test_linear_replacement_folds_the_fitted_map_and_removes_the_block():
    dense = tiny_llama()
    before = snapshot(dense)
    tokens = random_tokens()
    result = prune(dense, 2, 3, replacement="linear", train_sequences=tokens, train_config=TrainConfig(**FAST))
    assert num_layers(result.model) == 3 and result.replacement_parameters == 0 and result.train_result is None
    assert result.linear_fit.fitted_error < result.linear_fit.removal_error
    assert type(result.model) is type(dense)  # a plain model of the architecture: nothing was added
    t, _ = fit_linear_map(dense, 2, 3, tokens, progress=False)
    expected = copy.deepcopy(dense)
    fold_linear_map(expected, 1, t)
    remove_layers(expected, 2, 3)
    inputs = {"input_ids": tokens[:4], "attention_mask": torch.ones_like(tokens[:4])}
    torch.testing.assert_close(logits(result.model, inputs), logits(expected, inputs))
    untrained = prune(dense, 2, 3, replacement="linear")  # no tokens: the identity map, i.e. plain removal
    torch.testing.assert_close(logits(untrained.model, inputs), logits(prune(dense, 2, 3).model, inputs))
    with pytest.raises(ValueError, match="start >= 1"):
        prune(dense, 0, 2, replacement="linear", train_sequences=tokens)
    assert_unchanged(dense, before)


def test_iterative_linear_removes_layers_and_folds_a_map_each_round():
    dense = tiny_llama()
    result = prune_iterative(dense, 2, replacement="linear", calibration_sequences=random_tokens(8),
                             train_sequences=random_tokens(), train_config=TrainConfig(**FAST))
    assert num_layers(result.model) == 4 and 0 not in result.starts
    assert result.layer_map == tuple(i for i in range(6) if i not in result.removed)


def test_arguments_after_the_block_still_work_by_position_with_a_deprecation_warning():
    """The notebooks' form, e.g. ``prune(model, start, n, "ffn", train, config, cache=True)``, until they move."""
    dense, tokens, config = tiny_llama(), random_tokens(), TrainConfig(**FAST)
    old, new = positional_and_keyword(prune, (dense, 2, 3),
                                      dict(replacement="ffn_relu", train_sequences=tokens, train_config=config),
                                      cache=False)  # a keyword beside them, as the notebooks pass cache=True
    assert (old.start, old.n, old.replacement) == (2, 3, "ffn_relu")
    assert_same_training(old.train_result, new.train_result)
    assert_same_logits(old.model, new.model, tokens[:2])
    old, new = positional_and_keyword(prune_per_layer, (dense, 2, 2),
                                      dict(replacement="ffn_relu", train_sequences=tokens, train_config=config))
    assert_same_training(old.train_results, new.train_results)
    assert_same_logits(old.model, new.model, tokens[:2])
    old, new = positional_and_keyword(prune_iterative, (dense, 2),
                                      dict(replacement="none", calibration_sequences=random_tokens(8)),
                                      train_config=TrainConfig(progress=False))
    assert old.removed == new.removed
    assert_same_logits(old.model, new.model, tokens[:2])


def test_prune_to_sparsity_takes_out_one_layer_more_for_a_layer_replacement():
    """Equal removed parameters: removal of n layers and one layer in place of n + 1 leave models of one size."""
    model = tiny_llama()
    stats = collect_stats(model, random_tokens(num_seqs=4, seq_len=8), progress=False)
    removed = prune_to_sparsity(model, stats, 0.5, count="layers")
    replaced = prune_to_sparsity(model, stats, 0.5, replacement="layer", count="layers")
    assert (removed.n, replaced.n) == (3, 4)
    assert removed.start == block_scores(stats, "cosine", 3).best_start
    assert replaced.start == block_scores(stats, "cosine", 4).best_start
    assert num_layers(removed.model) == num_layers(replaced.model)
    assert sum(p.numel() for p in removed.model.parameters()) == sum(p.numel() for p in replaced.model.parameters())
