"""ReplaceMe's linear map: fitted by least squares, folded exactly, refused where it cannot fold."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import ARCHS, build, random_tokens, tiny_llama

from streamline_lib.architecture.hidden_states import iter_hidden_states
from streamline_lib.architecture.layers import get_layers, remove_layers
from streamline_lib.methods.linear_replacement import MLP_OUTPUTS, fit_linear_map, fold_linear_map


def block_output_error(pruned, dense, start: int, n: int, tokens: torch.Tensor, skip: int) -> float:
    """Mean squared error between the pruned model's h_start and the dense model's h_{start+n}."""
    [ours] = list(iter_hidden_states(pruned, tokens, batch_size=len(tokens), up_to=start, progress=False))
    [theirs] = list(iter_hidden_states(dense, tokens, batch_size=len(tokens), up_to=start + n, progress=False))
    return float((ours[start] - theirs[start + n])[:, skip:].double().pow(2).mean())


@pytest.mark.parametrize("model_type", sorted(MLP_OUTPUTS))
def test_folded_map_gives_the_fitted_error(model_type):
    """The pruned model's block output error on the calibration tokens is what the fit reports."""
    dense = build(model_type)
    tokens = random_tokens(32, 12)
    t, fit = fit_linear_map(dense, 2, 3, tokens, ridge=0.0, progress=False)
    assert t.shape == (dense.config.hidden_size,) * 2 and t.dtype == torch.float64
    assert fit.tokens == 32 * 11  # the first position of every sequence is left out
    assert fit.fitted_error <= fit.removal_error  # T = I is plain removal, so least squares cannot be worse
    pruned = copy.deepcopy(dense)
    fold_linear_map(pruned, 1, t)
    remove_layers(pruned, 2, 3)
    assert block_output_error(pruned, dense, 2, 3, tokens, skip=1) == pytest.approx(fit.fitted_error, rel=1e-3)
    removed = remove_layers(copy.deepcopy(dense), 2, 3)
    assert block_output_error(removed, dense, 2, 3, tokens, skip=1) == pytest.approx(fit.removal_error, rel=1e-3)


def test_the_map_learns_something_on_a_block_that_changes_the_state():
    dense = tiny_llama()
    tokens = random_tokens(64, 16)
    _, fit = fit_linear_map(dense, 1, 2, tokens, progress=False)
    assert fit.fitted_error < 0.9 * fit.removal_error


def test_fit_is_deterministic_and_leaves_the_model_unchanged():
    dense = tiny_llama()
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    first, _ = fit_linear_map(dense, 1, 2, random_tokens(16, 16), progress=False)
    second, _ = fit_linear_map(dense, 1, 2, random_tokens(16, 16), progress=False)
    assert torch.equal(first, second)
    assert all(torch.equal(v, state[k]) for k, v in dense.state_dict().items())


def test_ridge_pulls_the_map_towards_zero():
    dense = tiny_llama()
    tokens = random_tokens(16, 16)
    free, _ = fit_linear_map(dense, 1, 2, tokens, ridge=0.0, progress=False)
    strong, fit = fit_linear_map(dense, 1, 2, tokens, ridge=100.0, progress=False)
    assert strong.norm() < free.norm() and fit.ridge == 100.0


@pytest.mark.parametrize(("start", "n", "message"), [(0, 2, "start >= 1"), (4, 3, "runs past the last layer"),
                                                     (1, 0, "number of layers")])
def test_bad_blocks_are_refused(start, n, message):
    with pytest.raises(ValueError, match=message):
        fit_linear_map(tiny_llama(), start, n, random_tokens(4, 8), progress=False)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="skip_tokens"):
        fit_linear_map(tiny_llama(), 1, 2, random_tokens(4, 8), skip_tokens=8, progress=False)
    with pytest.raises(ValueError, match="ridge"):
        fit_linear_map(tiny_llama(), 1, 2, random_tokens(4, 8), ridge=-1.0, progress=False)


def test_gemma3_is_refused_with_the_reason():
    assert "gemma3_text" in ARCHS and "gemma3_text" not in MLP_OUTPUTS
    with pytest.raises(ValueError, match="normalises the MLP output"):
        fit_linear_map(build("gemma3_text"), 1, 2, random_tokens(4, 8), progress=False)


def test_fold_changes_only_the_projection():
    dense = tiny_llama()
    pruned = copy.deepcopy(dense)
    t = torch.eye(dense.config.hidden_size, dtype=torch.float64) * 2
    fold_linear_map(pruned, 1, t)
    changed = {k for k, v in pruned.state_dict().items() if not torch.equal(v, dense.state_dict()[k])}
    assert changed == {"model.layers.1.mlp.down_proj.weight"}
    projection = get_layers(pruned)[1].mlp.down_proj.weight
    torch.testing.assert_close(projection, 2 * get_layers(dense)[1].mlp.down_proj.weight)


def test_a_map_with_nan_or_infinities_is_refused():
    """An infinite weight inside the block makes the states it fits on infinite, and so the map."""
    dense = tiny_llama()
    with torch.no_grad():
        get_layers(dense)[3].mlp.down_proj.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"the least-squares map \(ReplaceMe\) holds NaN or infinite values \(in T\)"):
        fit_linear_map(dense, 2, 2, random_tokens(8, 8), progress=False)
