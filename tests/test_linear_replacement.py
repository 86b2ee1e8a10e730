"""ReplaceMe's linear map: fitted by least squares or cosine distance, folded exactly, refused where it cannot."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import sys

import pytest
import torch
from helpers import ARCHS, build, random_tokens, tiny_llama

from streamline_lib.architecture.hidden_states import iter_hidden_states
from streamline_lib.architecture.layers import get_layers, remove_layers
from streamline_lib.cli import main
from streamline_lib.methods.linear_replacement import MLP_OUTPUTS, CosineConfig, fit_linear_map, fold_linear_map
from streamline_lib.methods.pruning import prune
from streamline_lib.methods.training import TrainConfig
from streamline_lib.pipeline.recipe import Recipe, RecipeError


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


# --- the reference's two fits: plain least squares and the cosine distance ------------------------------------


def block_rows(model, start: int, n: int, tokens: torch.Tensor, skip: int = 1):
    """M, Y and r of every non-skipped position, float64, gathered apart from fit_linear_map."""
    seen = []
    handle = get_layers(model)[start - 1].mlp.down_proj.register_forward_hook(lambda m, a, out: seen.append(out))
    [states] = list(iter_hidden_states(model, tokens, batch_size=len(tokens), up_to=start + n, progress=False))
    handle.remove()
    d = model.config.hidden_size
    m = seen[0][:, skip:].reshape(-1, d).double()
    h_start, h_end = (states[i][:, skip:].reshape(-1, d).double() for i in (start, start + n))
    return m, m + h_end - h_start, h_start - m


def cosine_distance(m, target, t, offset=0.0) -> float:
    return float((1 - torch.nn.functional.cosine_similarity(m @ t + offset, target, dim=-1)).mean())


def test_the_default_is_plain_least_squares_the_exact_solution():
    """ridge=0 by default, as in the reference; T is what torch.linalg.lstsq gives on the stacked rows."""
    dense = tiny_llama()
    tokens = random_tokens(32, 12)
    t, fit = fit_linear_map(dense, 2, 3, tokens, progress=False)
    assert fit.ridge == 0.0 and fit.loss == "lstsq" and fit.steps == 0 and fit.fitted_cosine is None
    m, y, _ = block_rows(dense, 2, 3, tokens)
    assert len(m) == fit.tokens == 32 * 11 > dense.config.hidden_size  # overdetermined: one exact solution
    exact = torch.linalg.lstsq(m, y, driver="gelsd").solution
    torch.testing.assert_close(t, exact, rtol=1e-5, atol=1e-7)  # normal equations: a little precision lost
    assert fit.fitted_error == pytest.approx(float((m @ exact - y).pow(2).mean()), rel=1e-6)


COSINE = CosineConfig(epochs=40, lr=1e-2, batch_tokens=64)  # enough steps to converge on a tiny model


@pytest.mark.parametrize("with_residual", [False, True])
def test_cosine_map_lowers_the_cosine_distance_below_the_least_squares_map(with_residual):
    dense = tiny_llama()
    tokens = random_tokens(32, 12)
    config = dataclasses.replace(COSINE, with_residual=with_residual)
    t, fit = fit_linear_map(dense, 2, 3, tokens, progress=False, loss="cosine", cosine=config)
    lstsq, _ = fit_linear_map(dense, 2, 3, tokens, progress=False)
    m, y, r = block_rows(dense, 2, 3, tokens)
    target, offset = (y + r, r) if with_residual else (y, 0.0)  # cos(M T + r, h_end) or cos(M T, h_end - r)
    assert fit.loss == "cosine" and fit.ridge == 0.0 and fit.steps == 40 * math.ceil(fit.tokens / 64)
    assert fit.fitted_cosine == pytest.approx(cosine_distance(m, target, t, offset), rel=1e-4)
    identity = torch.eye(len(t), dtype=torch.float64)
    assert fit.removal_cosine == pytest.approx(cosine_distance(m, target, identity, offset), rel=1e-4)
    assert fit.fitted_cosine < cosine_distance(m, target, lstsq, offset) < fit.removal_cosine
    assert fit.fitted_error == pytest.approx(float((m @ t - y).pow(2).mean()), rel=1e-4)  # the MSE is reported too


def test_cosine_map_is_reproducible_under_its_seed_and_the_same_on_disk():
    dense = tiny_llama()
    tokens = random_tokens(16, 12)
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    first, _ = fit_linear_map(dense, 1, 2, tokens, progress=False, loss="cosine", cosine=COSINE)
    again, _ = fit_linear_map(dense, 1, 2, tokens, progress=False, loss="cosine", cosine=COSINE)
    on_disk, _ = fit_linear_map(dense, 1, 2, tokens, progress=False, loss="cosine",
                                cosine=dataclasses.replace(COSINE, memory_gb=0.0))
    other, _ = fit_linear_map(dense, 1, 2, tokens, progress=False, loss="cosine",
                              cosine=dataclasses.replace(COSINE, seed=1))
    assert torch.equal(first, again) and torch.equal(first, on_disk) and not torch.equal(first, other)
    assert all(torch.equal(v, state[k]) for k, v in dense.state_dict().items())


def test_cosine_map_starts_from_the_identity():
    """The reference's start: one small step of Adam from T = I moves every entry by at most the learning rate."""
    dense = tiny_llama()
    config = CosineConfig(epochs=1, lr=1e-3, batch_tokens=10_000)  # one step over all tokens
    t, fit = fit_linear_map(dense, 1, 2, random_tokens(8, 12), progress=False, loss="cosine", cosine=config)
    assert fit.steps == 1
    assert float((t - torch.eye(len(t), dtype=t.dtype)).abs().max()) <= 1e-3 * (1 + 1e-4)


def test_prune_fits_the_chosen_variant():
    dense = tiny_llama()
    tokens = random_tokens(16, 12)
    config = TrainConfig(progress=False, seed=3)
    result = prune(dense, 2, 2, replacement="linear", train_sequences=tokens, train_config=config,
                   linear_loss="cosine")
    t, fit = fit_linear_map(dense, 2, 2, tokens, progress=False, loss="cosine", cosine=CosineConfig(seed=3))
    assert result.linear_fit.loss == "cosine" and result.linear_fit.steps == fit.steps
    expected = copy.deepcopy(dense)
    fold_linear_map(expected, 1, t)
    torch.testing.assert_close(get_layers(result.model)[1].mlp.down_proj.weight,
                               get_layers(expected)[1].mlp.down_proj.weight, rtol=0, atol=0)
    assert prune(dense, 2, 2, replacement="linear", train_sequences=tokens, train_config=config).linear_fit.loss \
        == "lstsq"
    with pytest.raises(ValueError, match="replacement='ffn' has none"):
        prune(dense, 2, 2, replacement="ffn", linear_loss="cosine")
    with pytest.raises(ValueError, match="linear_loss='mse'"):
        prune(dense, 2, 2, replacement="linear", linear_loss="mse")


@pytest.mark.parametrize(("settings", "message"), [
    (dict(loss="mse"), "loss='mse': choose one of 'lstsq', 'cosine'"),
    (dict(loss="cosine", ridge=1e-4), "loss='cosine' has none: drop ridge"),
    (dict(cosine=CosineConfig()), "cosine settings apply to loss='cosine'"),
])
def test_bad_variant_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        fit_linear_map(tiny_llama(), 1, 2, random_tokens(4, 8), progress=False, **settings)


@pytest.mark.parametrize(("field", "value"), [("epochs", 0), ("lr", 0.0), ("batch_tokens", 0), ("memory_gb", -1.0)])
def test_bad_cosine_configs_are_refused(field, value):
    with pytest.raises(ValueError, match=f"CosineConfig.{field}="):
        CosineConfig(**{field: value})


def test_recipe_takes_the_variant_and_refuses_it_where_there_is_no_map():
    recipe = Recipe(method="replaceme", layers=2, linear_loss="cosine")
    assert recipe.replacement == "linear" and Recipe.from_dict(recipe.to_dict()) == recipe
    assert Recipe(layers=2).linear_loss == "lstsq"
    with pytest.raises(RecipeError, match="^linear_loss 'mse': choose one of lstsq, cosine$"):
        Recipe(method="replaceme", layers=2, linear_loss="mse")
    with pytest.raises(RecipeError, match="^linear_loss 'cosine' fits ReplaceMe's map: use method replaceme"):
        Recipe(layers=2, replacement="ffn", linear_loss="cosine")


@pytest.mark.parametrize(("flags", "problem"), [
    (["--linear-loss", "mse"], "invalid choice: 'mse'"),
    (["--linear-loss", "cosine", "--method", "shortgpt"], "linear_loss 'cosine' fits ReplaceMe's map"),
])
def test_cli_refuses_a_variant_without_a_map(capsys, tmp_path, flags, problem):
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(["prune", "--layers", "2", "--out", str(tmp_path / "out"), *flags]))
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("streamline prune: error: ") and problem in last
    assert not (tmp_path / "out").exists()


def test_cli_passes_the_variant_to_the_recipe():
    from streamline_lib.cli import _recipe, build_parser

    args = build_parser().parse_args(["prune", "--layers", "2", "--method", "replaceme", "--linear-loss", "cosine",
                                      "--out", "unused"])
    assert _recipe(args, args.defaults).linear_loss == "cosine"
    recipe_args = build_parser().parse_args(["prune", "--recipe", "r.json", "--linear-loss", "cosine", "--out", "x"])
    with pytest.raises(ValueError, match="drop --linear-loss"):
        _recipe(recipe_args, recipe_args.defaults)
