"""Training a replacement: it beats plain removal, deterministically, from RAM or disk."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import FAST, counting_tokens, random_tokens, tiny_llama
from torch import nn
from transformers import LlamaForCausalLM

from streamline_lib.architecture.layers import get_layers, replace_block
from streamline_lib.methods.replacement import make_replacement
from streamline_lib.methods.training import TrainConfig, TrainResult, learning_rate, train_module, train_replacement

START, N = 2, 3


def pruned_with(dense: nn.Module, kind: str, seed: int = 0) -> nn.Module:
    return replace_block(copy.deepcopy(dense), START, N, make_replacement(dense, START, N, kind, seed=seed))


def train(
    dense: nn.Module, kind: str, sequences: torch.Tensor | None = None, **config
) -> tuple[nn.Module, TrainResult]:
    pruned = pruned_with(dense, kind)
    sequences = random_tokens() if sequences is None else sequences
    result = train_replacement(pruned, START, sequences, TrainConfig(**{**FAST, **config}), dense=dense)
    return pruned, result


def replacement_state(pruned: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in get_layers(pruned)[START].state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def dense() -> LlamaForCausalLM:
    return tiny_llama()


@pytest.mark.parametrize("kind", ["ffn", "ffn_relu", "layer"])
def test_mse_training_beats_plain_removal(dense, kind):
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    pruned, result = train(dense, kind)
    assert result.loss == "mse" and not result.pairs_on_disk
    assert result.best_val_loss < 0.9 * result.baseline_val_loss
    assert result.best_val_loss == min(result.val_losses)
    assert result.val_steps[0] == 0 and result.val_steps[-1] == result.steps == len(result.train_losses) == 3 * 13
    assert_same_state(dense.state_dict(), before)  # the dense model only provided the targets
    assert {p.requires_grad for p in pruned.parameters()} == {True}  # flags restored


def test_untrained_ffn_relu_scores_exactly_plain_removal(dense):
    _, result = train(dense, "ffn_relu")
    assert result.val_losses[0] == pytest.approx(result.baseline_val_loss, rel=1e-6)


def test_baseline_is_the_mse_between_block_input_and_output(dense):
    pruned, result = train(dense, "ffn_relu", epochs=1)
    with torch.no_grad():
        states = dense(input_ids=random_tokens(), output_hidden_states=True).hidden_states
    # every sequence's mean squared change across the block; the validation ones are a subset
    per_sequence = (states[START] - states[START + N]).pow(2).mean(dim=(1, 2))
    assert per_sequence.min() <= result.baseline_val_loss <= per_sequence.max()


def test_mse_can_leave_out_the_first_tokens(dense):
    same = random_tokens(1).expand(8, -1)  # identical sequences: the validation ones are known
    with torch.no_grad():
        states = dense(input_ids=same[:1], output_hidden_states=True).hidden_states
    change = (states[START] - states[START + N]).pow(2)[0]  # (seq_len, hidden)
    for skip in (0, 1, 5):
        _, result = train(dense, "ffn_relu", same, epochs=1, mse_skip_tokens=skip)
        assert result.baseline_val_loss == pytest.approx(change[skip:].mean().item(), rel=1e-5)
        assert result.val_losses[0] == pytest.approx(result.baseline_val_loss, rel=1e-6)
    with pytest.raises(ValueError, match="mse_skip_tokens=16 leaves no position of the 16-token sequences"):
        train(dense, "ffn_relu", mse_skip_tokens=16)
    with pytest.raises(ValueError, match=r"mse_skip_tokens=-1 is invalid: it must be >= 0 \(0 is the paper's loss\)"):
        TrainConfig(mse_skip_tokens=-1)


def test_training_is_deterministic_and_depends_on_the_seed(dense):
    first, a = train(dense, "layer")
    second, b = train(dense, "layer")
    assert (a.train_losses, a.val_losses) == (b.train_losses, b.val_losses)
    assert_same_state(replacement_state(first), replacement_state(second))
    _, c = train(dense, "layer", seed=1)
    assert c.train_losses != a.train_losses


@pytest.mark.parametrize("kind", ["ffn_relu", "layer"])
def test_pairs_streamed_from_disk_train_exactly_as_in_ram(dense, kind):
    in_ram, a = train(dense, kind)
    on_disk, b = train(dense, kind, pair_memory_gb=0)
    assert b.pairs_on_disk and not a.pairs_on_disk
    assert (a.train_losses, a.val_losses, a.baseline_val_loss) == (b.train_losses, b.val_losses, b.baseline_val_loss)
    assert_same_state(replacement_state(in_ram), replacement_state(on_disk))


def test_dense_pairs_are_computed_once_per_block_and_reused_by_the_next_variant(dense):
    dense_calls = []
    handle = get_layers(dense)[0].register_forward_pre_hook(lambda module, args: dense_calls.append(1))
    try:
        first, a = train(dense, "layer")
        after_first = len(dense_calls)
        second, b = train(dense, "layer")  # same block, model and sequences: no dense pass
        assert after_first > 0 and len(dense_calls) == after_first
        train(dense, "ffn", random_tokens(num_seqs=48))  # other sequences: a new dense pass
        assert len(dense_calls) > after_first
    finally:
        handle.remove()
    assert (a.train_losses, a.val_losses) == (b.train_losses, b.val_losses)
    assert_same_state(replacement_state(first), replacement_state(second))


def test_early_stopping_restores_the_best_weights(dense):
    untrained = replacement_state(pruned_with(dense, "ffn"))
    pruned, result = train(dense, "ffn", lr=10.0, min_lr=0.0, warmup_fraction=0.0, eval_every=1, patience=2)
    assert result.stopped_early
    assert result.steps == 2 and result.val_steps == (0, 1, 2)  # two evaluations without improvement
    assert result.best_step == 0 and result.best_val_loss == result.val_losses[0] < min(result.val_losses[1:])
    assert_same_state(replacement_state(pruned), untrained)


def test_zero_learning_rate_stops_at_the_first_evaluation(dense):
    _, result = train(dense, "ffn_relu", lr=0.0, min_lr=0.0, patience=1)
    assert result.stopped_early and result.steps == FAST["eval_every"] and result.best_step == 0


def test_lm_training_lowers_the_pruned_models_loss_and_freezes_the_rest(dense):
    pruned = pruned_with(dense, "ffn_relu")
    pruned.lm_head.weight.requires_grad_(False)  # a flag that must survive training as it was
    others = {name: p.clone() for name, p in pruned.named_parameters() if not name.startswith(f"model.layers.{START}.")}
    flags = {name: p.requires_grad for name, p in pruned.named_parameters()}
    config = TrainConfig(**{**FAST, "loss": "lm"})
    result = train_replacement(pruned, START, counting_tokens(), config)
    assert result.loss == "lm" and not result.pairs_on_disk
    assert result.val_losses[0] == pytest.approx(result.baseline_val_loss, rel=1e-6)  # zero-init: plain removal
    assert result.best_val_loss < result.baseline_val_loss - 0.1
    assert {name: p.requires_grad for name, p in pruned.named_parameters()} == flags
    for name, p in pruned.named_parameters():
        if name in others:
            torch.testing.assert_close(p, others[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("loss", ["mse", "lm"])
def test_low_precision_model_trains_in_float32_and_keeps_its_dtype(loss):
    dense = tiny_llama(torch.bfloat16)
    pruned = pruned_with(dense, "layer")
    before = replacement_state(pruned)
    result = train_replacement(pruned, START, counting_tokens(), TrainConfig(**{**FAST, "loss": loss, "epochs": 1}),
                               dense=dense)
    assert {p.dtype for p in pruned.parameters()} == {torch.bfloat16}
    assert result.best_step > 0 and math.isfinite(result.best_val_loss)
    assert any(not torch.equal(before[k], v) for k, v in replacement_state(pruned).items())


def test_learning_rate_warms_up_then_decays_to_min_lr():
    config = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_fraction=0.1)
    rates = [learning_rate(step, 100, config) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)  # 10 warm-up steps
    assert rates[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert learning_rate(0, 1, TrainConfig(warmup_fraction=0.0)) == TrainConfig().lr


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("loss", "kl", "TrainConfig.loss='kl' is invalid: it must be one of 'mse', 'lm'"),
        ("min_lr", 1.0, "TrainConfig.min_lr=1.0 is invalid: it must be between 0 and lr=0.001"),
        ("val_fraction", 0.0, "TrainConfig.val_fraction=0.0 is invalid: it must be in (0, 1)"),
        ("patience", 0, "TrainConfig.patience=0 is invalid"),
        ("batch_size", 0, "TrainConfig.batch_size=0 is invalid"),
    ],
)
def test_config_errors_quote_the_bad_value(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**{field: value})


def test_training_errors_name_the_fix(dense):
    pruned = pruned_with(dense, "ffn")
    with pytest.raises(ValueError, match="loss='mse' needs the dense model"):
        train_replacement(pruned, START, random_tokens(), TrainConfig(progress=False))
    with pytest.raises(ValueError, match=r"num_seqs >= 2.*got \(1, 16\)"):
        train_replacement(pruned, START, random_tokens(1), TrainConfig(progress=False), dense=dense)
    with pytest.raises(ValueError, match="no parameters to train"):
        replace_block(pruned, START, 1, nn.Identity())
        train_replacement(pruned, START, random_tokens(), TrainConfig(progress=False), dense=dense)


class DivergingObjective:
    """Every step drives ``module``'s weights to NaN, and validation "improves" every time, so they are kept."""

    pairs_on_disk = False
    num_train = 8

    def __init__(self, module: nn.Linear) -> None:
        self.module, self.validations = module, 0

    def train_loss(self, indices: torch.Tensor) -> torch.Tensor:
        return (self.module.weight * math.inf).sum()  # infinite gradients: clipping turns them into NaN

    def val_loss(self) -> float:
        self.validations += 1
        return 1 / self.validations

    def baseline(self) -> float:
        return 1.0


def test_training_that_ends_with_non_finite_weights_is_refused():
    model = tiny_llama()
    module = get_layers(model)[START].mlp.down_proj
    config = TrainConfig(**FAST)
    with pytest.raises(ValueError, match=r"the trained Linear holds NaN or infinite values \(in weight\); training "
                                         r"diverged: lower the learning rate \(TrainConfig.lr=0.01\)"):
        train_module(model, module, random_tokens(), config, lambda train, val, stack: DivergingObjective(module))
