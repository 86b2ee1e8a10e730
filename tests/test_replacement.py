"""Replacement modules fit every supported architecture and start where they should."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import ARCHS, batch, build, logits
from torch import nn

from streamline_lib.architecture.layers import final_norm, get_layers, remove_layers, replace_block
from streamline_lib.methods.replacement import (
    PlainFFN,
    ResidualFFN,
    SwiGLU,
    is_llama_style,
    layers_to_replace,
    make_ffn_like,
    make_replacement,
    replacement_parameters,
)


def replaced(model: nn.Module, kind: str, start: int = 1, n: int = 3, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with layers start..start+n-1 replaced by an untrained ``kind``."""
    module = make_replacement(model, start, n, kind, seed=seed)
    return replace_block(copy.deepcopy(model), start, n, module)


@pytest.mark.parametrize("model_type", ARCHS)
def test_untrained_ffn_relu_is_plain_removal(model_type):
    dense = build(model_type)
    removed = remove_layers(copy.deepcopy(dense), 1, 3)
    torch.testing.assert_close(logits(replaced(dense, "ffn_relu"), batch()), logits(removed, batch()),
                               rtol=0, atol=0)


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "opt"])
def test_the_authors_ffn_is_a_plain_relu_mlp_with_pytorchs_initialisation(model_type):
    """``ffn_authors`` is fc2(relu(fc1(h))), d -> 4d -> d: no residual, no norm, default init (issue 22)."""
    dense = build(model_type)
    ffn = make_replacement(dense, 1, 3, "ffn_authors", seed=4)
    hidden = dense.config.hidden_size
    assert isinstance(ffn, PlainFFN) and [m for m in ffn.modules() if isinstance(m, nn.Linear)] == [ffn.fc1, ffn.fc2]
    assert ffn.fc1.weight.shape == (4 * hidden, hidden) and ffn.fc2.weight.shape == (hidden, 4 * hidden)
    for linear in (ffn.fc1, ffn.fc2):  # PyTorch's bounds: weight and bias within 1/sqrt(fan_in), neither zero
        bound = 1 / linear.in_features ** 0.5
        assert linear.bias.abs().max() <= bound and linear.bias.any()
        assert linear.weight.abs().max() <= bound and linear.weight.any()
    h = torch.randn(2, 5, hidden)
    torch.testing.assert_close(ffn(h, None, use_cache=False), ffn.fc2(torch.relu(ffn.fc1(h))), rtol=0, atol=0)
    again = make_replacement(dense, 1, 3, "ffn_authors", seed=4)
    assert all(torch.equal(a, b) for a, b in zip(ffn.state_dict().values(), again.state_dict().values()))
    removed = remove_layers(copy.deepcopy(dense), 1, 3)
    assert not torch.allclose(logits(replaced(dense, "ffn_authors"), batch()), logits(removed, batch()))


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "phi3", "gemma3_text"])
def test_untrained_swiglu_is_plain_removal(model_type):
    dense = build(model_type)
    removed = remove_layers(copy.deepcopy(dense), 1, 3)
    ffn = make_replacement(dense, 1, 3, "ffn")
    assert isinstance(ffn, ResidualFFN) and isinstance(ffn.mlp, SwiGLU)
    assert not ffn.mlp.down_proj.weight.any() and ffn.mlp.gate_proj.weight.any()
    torch.testing.assert_close(logits(replaced(dense, "ffn"), batch()), logits(removed, batch()), rtol=0, atol=0)


@pytest.mark.parametrize(("model_type", "inner"), [("gpt2", 4 * 32), ("opt", 4 * 32), ("phi3", 64)])
def test_fresh_ffn_shapes(model_type, inner):
    model = build(model_type)
    ffn = make_replacement(model, 1, 2, "ffn")
    assert ffn.mlp.gate_proj.weight.shape == (inner, 32)
    relu = make_replacement(model, 1, 2, "ffn_relu")
    assert [m.weight.shape for m in relu.mlp if isinstance(m, nn.Linear)] == [(4 * 32, 32), (32, 4 * 32)]
    assert not relu.mlp[2].weight.any() and relu.mlp[0].weight.any()
    assert type(ffn.norm) is type(relu.norm) is type(final_norm(model))  # the model's own kind of norm


def test_layer_replacement_is_a_copy_of_the_first_removed_layer():
    model = build("llama")
    layer = make_replacement(model, 2, 3, "layer")
    original = get_layers(model)[2]
    assert type(layer) is type(original) and layer is not original
    for (name, p), q in zip(layer.named_parameters(), original.parameters()):
        assert torch.equal(p, q) and p is not q, name


def test_none_is_no_module():
    assert make_replacement(build("llama"), 1, 2, "none") is None


@pytest.mark.parametrize("kind", ["ffn", "ffn_relu", "layer"])
def test_replacement_keeps_dtype_and_device(kind):
    model = build("gpt2").to(torch.bfloat16)
    module = make_replacement(model, 1, 2, kind)
    assert {p.dtype for p in module.parameters()} == {torch.bfloat16}
    assert {p.device for p in module.parameters()} == {model.device}
    inputs = batch()
    assert torch.isfinite(logits(replace_block(model, 1, 2, module), inputs).float()).all()


def test_fresh_initialisation_is_seeded_and_leaves_the_global_rng_alone():
    model = build("gpt2")
    state = torch.random.get_rng_state()
    a, b = (make_replacement(model, 1, 2, "ffn_relu", seed=3) for _ in range(2))
    c = make_replacement(model, 1, 2, "ffn_relu", seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.mlp[0].weight, b.mlp[0].weight)
    assert not torch.equal(a.mlp[0].weight, c.mlp[0].weight)


def test_errors_name_the_problem():
    model = build("llama")
    with pytest.raises(ValueError, match="unknown replacement 'mlp'; choose one of: none, ffn, ffn_relu, ffn_authors, layer"):
        make_replacement(model, 1, 2, "mlp")
    with pytest.raises(ValueError, match="'ffn' at start=0.*start >= 1"):
        make_replacement(model, 0, 2, "ffn")
    with pytest.raises(ValueError, match="start=5 \\+ n=2 = 7 runs past the last layer"):
        make_replacement(model, 5, 2, "layer")
    assert make_replacement(model, 0, 2, "layer") is not None  # a layer has attention: fine at position 0


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_fresh_ffn_has_the_shapes_of_the_ffn_replacement_even_on_meta(model_type):
    model = build(model_type)
    shapes = {k: v.shape for k, v in make_replacement(model, 1, 2, "ffn").state_dict().items()}
    assert {k: v.shape for k, v in make_ffn_like(model, "ffn").state_dict().items()} == shapes
    with torch.device("meta"):
        skeleton = type(model)(model.config)
    for kind in ("ffn_relu", "ffn_authors"):  # what a saved replacement's weights load into
        assert {p.device.type for p in make_ffn_like(skeleton, kind).parameters()} == {"meta"}
    with pytest.raises(ValueError, match="make_ffn_like builds one of ffn, ffn_relu, ffn_authors, not 'layer'"):
        make_ffn_like(model, "layer")


@pytest.mark.parametrize(("model_type", "expected"), [("llama", True), ("qwen2", True), ("gemma3_text", False),
                                                      ("phi3", False), ("gpt2", False)])
def test_llama_style_detection(model_type, expected):
    model = build(model_type)
    assert is_llama_style(get_layers(model)[0], model.config) is expected


@pytest.mark.parametrize("model_type", ARCHS)
@pytest.mark.parametrize("kind", ["none", "linear", "ffn", "ffn_relu", "ffn_authors", "layer"])
def test_replacement_parameters_counts_what_make_replacement_builds(model_type, kind):
    """Counted from shapes without building; must equal the module actually built (0 when none is)."""
    model = build(model_type)
    if kind == "linear" and model_type == "gemma3_text":
        pytest.skip("Gemma 3 cannot take ReplaceMe's fold")
    module = make_replacement(model, 1, 3, kind)
    built = 0 if module is None else sum(p.numel() for p in module.parameters())
    assert replacement_parameters(model, kind) == built


def test_layers_to_replace_is_net_of_the_replacement():
    model = build("llama")  # 6 equal layers
    assert [layers_to_replace(model, 0.5, kind, "layers") for kind in ("none", "linear", "layer")] == [3, 3, 4]
