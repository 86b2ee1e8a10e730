"""Layer surgery on tiny random models of every supported architecture."""

from __future__ import annotations

import copy
import operator
from types import SimpleNamespace

import pytest
import torch
from helpers import ARCHS, CONFIGS, LAYERS, F, S, batch, build, greedy, logits, skip_with_hooks
from torch import nn
from transformers import AutoModelForCausalLM, BertConfig, DynamicCache, LlamaModel

from streamline_lib.architecture.layers import (
    SUPPORTED_ARCHITECTURES,
    UnsupportedArchitectureError,
    architecture,
    decoder_layer_class,
    final_norm,
    get_layers,
    lm_head,
    num_layers,
    remove_layers,
    replace_block,
)


def test_every_supported_architecture_is_tested():
    assert set(SUPPORTED_ARCHITECTURES) == set(ARCHS)


@pytest.mark.parametrize("model_type", ARCHS)
def test_accessors_find_the_ecosystem_modules(model_type):
    model = build(model_type)
    layers = get_layers(model)
    assert isinstance(layers, nn.ModuleList) and num_layers(model) == len(layers) == LAYERS
    assert all(type(layer) is decoder_layer_class(model) for layer in layers)
    assert lm_head(model) is model.get_output_embeddings()
    assert "norm" in type(final_norm(model)).__name__.lower()
    assert architecture(model) is architecture(model.config)


@pytest.mark.parametrize("model_type", ARCHS)
def test_removing_a_block_equals_skipping_it(model_type):
    dense = build(model_type)
    pruned = remove_layers(copy.deepcopy(dense), start=1, n=2)
    skip_with_hooks(dense, range(1, 3))
    inputs = batch()
    torch.testing.assert_close(logits(pruned, inputs), logits(dense, inputs))


@pytest.mark.parametrize("model_type", ARCHS)
def test_removal_keeps_config_and_indices_consistent(model_type):
    model = build(model_type)
    original = list(get_layers(model))
    original_types = getattr(model.config, "layer_types", None)

    remove_layers(model, start=1, n=2)

    layers = get_layers(model)
    assert list(layers) == [original[0], *original[3:]]
    assert model.config.num_hidden_layers == LAYERS - 2
    if model_type == "gpt2":
        assert model.config.n_layer == LAYERS - 2
    attention = operator.attrgetter(architecture(model).attention)
    assert [attention(layer).layer_idx for layer in layers] == list(range(LAYERS - 2))
    for i, layer in enumerate(layers):
        assert {m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")} == {i}
    if original_types is not None:
        assert model.config.layer_types == [original_types[0], *original_types[3:]]
        assert [attention(layer).layer_type for layer in layers] == model.config.layer_types
    assert len(DynamicCache(config=model.config).layers) == LAYERS - 2


@pytest.mark.parametrize("model_type", ARCHS)
def test_generate_with_kv_cache_after_removal(model_type):
    model = remove_layers(build(model_type), start=1, n=2)
    inputs = batch()
    cached = greedy(model, inputs, use_cache=True)
    assert cached.shape == (2, 15)
    torch.testing.assert_close(cached, greedy(model, inputs, use_cache=False), rtol=0, atol=0)


@pytest.mark.parametrize("model_type", ARCHS)
def test_pruned_model_saves_and_reloads(model_type, tmp_path):
    model = remove_layers(build(model_type), start=1, n=2)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert num_layers(reloaded) == LAYERS - 2
    inputs = batch()
    torch.testing.assert_close(logits(reloaded, inputs), logits(model, inputs))


def test_gpt2_inverse_layer_idx_scaling_warns_that_a_reload_differs():
    config = CONFIGS["gpt2"]()
    config.scale_attn_by_inverse_layer_idx = True
    torch.manual_seed(0)
    dense = AutoModelForCausalLM.from_config(config).eval()
    with pytest.warns(UserWarning, match="scale_attn_by_inverse_layer_idx=True"):
        pruned = remove_layers(copy.deepcopy(dense), start=1, n=2)
    skip_with_hooks(dense, range(1, 3))
    torch.testing.assert_close(logits(pruned, batch()), logits(dense, batch()))


@pytest.mark.parametrize("model_type", ARCHS)
def test_replace_block_with_a_decoder_layer(model_type):
    model = build(model_type)
    replacement = copy.deepcopy(get_layers(model)[1])
    replace_block(model, start=1, n=2, module=replacement)

    assert num_layers(model) == model.config.num_hidden_layers == LAYERS - 1
    assert get_layers(model)[1] is replacement
    assert operator.attrgetter(architecture(model).attention)(replacement).layer_idx == 1
    inputs = batch()
    assert torch.isfinite(logits(model, inputs)).all()
    torch.testing.assert_close(greedy(model, inputs, True), greedy(model, inputs, False), rtol=0, atol=0)


class Identity(nn.Module):
    """Accepts any decoder layer's call and returns its hidden states unchanged."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


@pytest.mark.parametrize("model_type", ARCHS)
def test_replace_block_with_any_module_taking_the_layer_call(model_type):
    removed = remove_layers(build(model_type), start=2, n=3)
    replaced = replace_block(build(model_type), start=2, n=3, module=Identity())
    inputs = batch()
    torch.testing.assert_close(logits(replaced, inputs), logits(removed, inputs))


def test_replacement_keeps_its_own_attention_type():
    model = build("gemma3_text")
    full_layer = copy.deepcopy(get_layers(model)[1])
    replace_block(model, start=2, n=2, module=full_layer)  # replaces two sliding layers
    assert model.config.layer_types == [S, F, F, F, S]
    inputs = batch()
    torch.testing.assert_close(greedy(model, inputs, True), greedy(model, inputs, False), rtol=0, atol=0)


def test_qwen2_builds_the_sliding_mask_again_once_a_sliding_layer_returns():
    model = build("qwen2")  # layer_types = [F, F, S, S, S, S]
    sliding_layer = copy.deepcopy(get_layers(model)[2])
    remove_layers(model, start=2, n=4)
    assert not model.model.has_sliding_layers
    replace_block(model, start=1, n=1, module=sliding_layer)
    assert model.config.layer_types == [F, S]
    assert model.model.has_sliding_layers
    inputs = batch()
    torch.testing.assert_close(greedy(model, inputs, True), greedy(model, inputs, False), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (5, 2, "start=5 + n=2 = 7 runs past the last layer"),
        (0, 0, "n=0 is the number of layers to remove"),
        (2, -1, "n=-1"),
        (-1, 2, "start=-1 is negative"),
        (0, 6, "would remove all 6 layers; at least one layer must remain, so n <= 5"),
    ],
)
def test_bad_blocks_are_refused_and_leave_the_model_alone(start, n, expected):
    model = build("llama")
    with pytest.raises(ValueError) as err:
        remove_layers(model, start, n)
    assert expected in str(err.value)
    if "at least one" not in expected:
        assert "valid: n >= 1, 0 <= start, start + n <= 6" in str(err.value)
    assert num_layers(model) == model.config.num_hidden_layers == LAYERS


def test_replace_block_refuses_replacing_nothing():
    model = build("llama")
    with pytest.raises(ValueError, match="n=0 is the number of layers to replace"):
        replace_block(model, 2, 0, Identity())
    assert num_layers(model) == LAYERS


def test_replace_block_may_replace_every_layer():
    model = build("llama")
    replace_block(model, 0, LAYERS, copy.deepcopy(get_layers(model)[0]))
    assert num_layers(model) == model.config.num_hidden_layers == 1


@pytest.mark.parametrize(
    "unsupported",
    [SimpleNamespace(config=SimpleNamespace(model_type="mamba")), BertConfig()],
    ids=["fake-mamba-model", "bert-config"],
)
def test_unsupported_architecture_names_it_and_says_how_to_add_one(unsupported):
    with pytest.raises(UnsupportedArchitectureError) as err:
        architecture(unsupported)
    message = str(err.value)
    model_type = getattr(unsupported, "config", unsupported).model_type
    assert f"model_type {model_type!r} is not supported" in message
    assert all(name in message for name in SUPPORTED_ARCHITECTURES)
    assert f"SUPPORTED_ARCHITECTURES[{model_type!r}] = LayerPaths(" in message
    assert isinstance(err.value, ValueError)


def test_unsupported_model_cannot_be_pruned():
    with pytest.raises(UnsupportedArchitectureError, match="'mamba'"):
        remove_layers(SimpleNamespace(config=SimpleNamespace(model_type="mamba")), 1, 1)


def test_bare_decoder_gets_a_clear_error():
    with pytest.raises(AttributeError, match="LlamaModel has no attribute 'model.layers'"):
        get_layers(LlamaModel(CONFIGS["llama"]()))
