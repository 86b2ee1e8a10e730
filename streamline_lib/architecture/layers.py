"""Find and replace the decoder layers of decoder-only causal LMs.

Layer pruning (LLM-Streamline and relatives) removes a contiguous block of decoder
layers and optionally puts one trained module in its place. Deleting modules from the
layer list is the easy part; the model must then still *be* a consistent transformers
model, because several things are indexed by layer position rather than held by the
layer itself:

* ``config.num_hidden_layers`` sizes the KV cache (``DynamicCache(config=...)``) and, in
  llama-style models, slices the layer list in ``forward``.
* ``config.layer_types`` (gemma3, qwen2) picks each position's attention mask, rotary
  embedding and cache layer (sliding window or full), so it must follow the layers.
* every attention's ``layer_idx`` is the slot it reads and writes in the KV cache, so the
  kept layers must be renumbered ``0 .. L'-1``.

Each supported architecture is described by the dotted attribute paths of its layer list,
final norm, LM head and per-layer attention (:class:`LayerPaths`), under transformers'
own names. :func:`remove_layers` and :func:`replace_block` edit the model in place and
leave the config consistent (:func:`sync_config`), so the pruned model runs ``generate``
with a KV cache and saves and reloads like any other checkpoint.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, PreTrainedModel


@dataclass(frozen=True)
class LayerPaths:
    """Dotted attribute paths into one architecture's ``*ForCausalLM`` model."""

    layers: str
    """The ``nn.ModuleList`` of decoder layers, from the model."""
    final_norm: str
    """The norm applied after the last layer, from the model."""
    lm_head: str
    """The output projection to vocabulary logits, from the model."""
    attention: str
    """The attention module carrying ``layer_idx``, from one decoder layer."""


_LLAMA_STYLE = LayerPaths(layers="model.layers", final_norm="model.norm", lm_head="lm_head", attention="self_attn")

SUPPORTED_ARCHITECTURES: dict[str, LayerPaths] = {
    "llama": _LLAMA_STYLE,
    "mistral": _LLAMA_STYLE,
    "qwen2": _LLAMA_STYLE,
    "gemma3_text": _LLAMA_STYLE,
    "phi3": _LLAMA_STYLE,
    "opt": LayerPaths(
        layers="model.decoder.layers",
        final_norm="model.decoder.final_layer_norm",
        lm_head="lm_head",
        attention="self_attn",
    ),
    "gpt2": LayerPaths(layers="transformer.h", final_norm="transformer.ln_f", lm_head="lm_head", attention="attn"),
    # transformers 5 renamed GPT-NeoX's `embed_out` to `lm_head` (old checkpoints are renamed on load).
    "gpt_neox": LayerPaths(
        layers="gpt_neox.layers",
        final_norm="gpt_neox.final_layer_norm",
        lm_head="lm_head",
        attention="attention",
    ),
}
"""model_type -> :class:`LayerPaths`. Register a new architecture by adding an entry."""


class UnsupportedArchitectureError(ValueError):
    """The model's ``model_type`` has no entry in :data:`SUPPORTED_ARCHITECTURES`."""

    def __init__(self, model_type: Any) -> None:
        super().__init__(
            f"model_type {model_type!r} is not supported; supported model types: "
            f"{', '.join(sorted(SUPPORTED_ARCHITECTURES))}. To add one, register its attribute paths, e.g. "
            f"SUPPORTED_ARCHITECTURES[{model_type!r}] = LayerPaths(layers='model.layers', "
            "final_norm='model.norm', lm_head='lm_head', attention='self_attn'), after checking its modeling "
            "file for anything else indexed by layer position that sync_config must keep in step."
        )


def architecture(model_or_config: PreTrainedModel | PreTrainedConfig) -> LayerPaths:
    """The :class:`LayerPaths` of a model (or config), by its ``model_type``."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitectureError(model_type)
    return SUPPORTED_ARCHITECTURES[model_type]


def _resolve(model: nn.Module, path: str) -> Any:
    try:
        return operator.attrgetter(path)(model)
    except AttributeError:
        raise AttributeError(
            f"{type(model).__name__} has no attribute {path!r}; layer surgery expects the causal-LM class "
            "(e.g. LlamaForCausalLM, GPT2LMHeadModel), not the bare decoder or another head."
        ) from None


def get_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The model's decoder layers, in order."""
    return _resolve(model, architecture(model).layers)


def layers_owner(model: PreTrainedModel) -> tuple[nn.Module, str]:
    """The module holding the layer list (e.g. ``LlamaModel``) and the list's attribute name."""
    owner_path, _, name = architecture(model).layers.rpartition(".")
    return _resolve(model, owner_path), name


def set_layers(model: PreTrainedModel, layers: list[nn.Module]) -> None:
    """Install ``layers`` as the decoder layers; call :func:`sync_config` afterwards."""
    owner, name = layers_owner(model)
    setattr(owner, name, nn.ModuleList(layers))


def final_norm(model: PreTrainedModel) -> nn.Module | None:
    """The norm after the last decoder layer.

    ``None`` for OPT checkpoints with ``do_layer_norm_before=False`` (e.g. opt-350m), which
    have no final norm; their ``model.decoder.project_out`` then runs before the LM head.
    """
    return _resolve(model, architecture(model).final_norm)


def lm_head(model: PreTrainedModel) -> nn.Module:
    """The projection from the last hidden state to vocabulary logits."""
    return _resolve(model, architecture(model).lm_head)


def num_layers(model: PreTrainedModel) -> int:
    """The number of decoder layers the model has now."""
    return len(get_layers(model))


def decoder_layer_class(model: PreTrainedModel) -> type[nn.Module]:
    """The architecture's decoder-layer class, e.g. ``LlamaDecoderLayer``.

    Read from transformers' own ``_can_record_outputs["hidden_states"]`` (the module whose
    output is a hidden state), so it stays right when layer 0 has been replaced.
    """
    architecture(model)  # raises for unsupported models
    return model._can_record_outputs["hidden_states"]


def check_block(model: PreTrainedModel, start: int, n: int, *, removing: bool) -> None:
    """Refuse a block ``start .. start+n-1`` that is not inside ``model``, or (``removing``) that is every layer."""
    total = num_layers(model)
    valid = f"valid: n >= 1, 0 <= start, start + n <= {total} (the model has {total} layers)"
    if n < 1:
        raise ValueError(f"n={n} is the number of layers to {'remove' if removing else 'replace'}; {valid}.")
    if start < 0:
        raise ValueError(f"start={start} is negative; start is the 0-based index of the first layer; {valid}.")
    if start + n > total:
        raise ValueError(f"start={start} + n={n} = {start + n} runs past the last layer; {valid}.")
    if removing and n == total:
        raise ValueError(
            f"start={start}, n={n} would remove all {total} layers; "
            f"at least one layer must remain, so n <= {total - 1}."
        )


def _own_layer_type(module: nn.Module, paths: LayerPaths) -> str | None:
    """The attention type a decoder layer was built with (qwen2, gemma3), else ``None``."""
    try:
        return getattr(operator.attrgetter(paths.attention)(module), "layer_type", None)
    except AttributeError:
        return None


def _splice(model: PreTrainedModel, start: int, n: int, new: list[nn.Module]) -> PreTrainedModel:
    """Put ``new`` in place of layers ``start .. start+n-1`` and sync the config."""
    config = model.config
    layers = list(get_layers(model))
    # layer_types is edited here rather than in sync_config: only the caller knows which
    # positions were kept. A new module keeps its own attention type if it has one. A module
    # without attention takes layer 0's type: transformers reads each type's mask sizes from
    # the KV cache of the first layer of that type, which an attention-free module never
    # fills, and layer 0 is always the first of its own type.
    if getattr(config, "layer_types", None) is not None:
        paths = architecture(model)
        new_types = [_own_layer_type(module, paths) or config.layer_types[0] for module in new]
        config.layer_types = config.layer_types[:start] + new_types + config.layer_types[start + n :]
    set_layers(model, layers[:start] + new + layers[start + n :])
    sync_config(model)
    return model


def remove_layers(model: PreTrainedModel, start: int, n: int) -> PreTrainedModel:
    """Remove layers ``start .. start+n-1`` (0-based, ``n`` layers) in place; returns ``model``."""
    check_block(model, start, n, removing=True)
    return _splice(model, start, n, [])


def check_layer_set(model: PreTrainedModel, layers: Iterable[int]) -> list[int]:
    """The 0-based ``layers`` to remove, sorted, after checking that removing them leaves a model."""
    indices = sorted(layers)
    total = num_layers(model)
    if not indices:
        raise ValueError("layers is empty: name at least one 0-based layer index to remove")
    if len(set(indices)) != len(indices):
        raise ValueError(f"layers {indices} name a layer more than once; each index must appear once")
    if indices[0] < 0 or indices[-1] >= total:
        raise ValueError(f"layers {indices} run outside 0 .. {total - 1} (the model has {total} layers)")
    if len(indices) == total:
        raise ValueError(f"removing all {total} layers leaves no model; keep at least one")
    return indices


def remove_layer_set(model: PreTrainedModel, layers: Iterable[int]) -> PreTrainedModel:
    """Remove the layers at the 0-based ``layers`` indices, consecutive or not, in place; returns ``model``.

    ShortGPT and SLEB remove layers that need not be neighbours. Indices are those of the
    model as it is now (:func:`check_layer_set` says what is refused).
    """
    for index in reversed(check_layer_set(model, layers)):  # from the top down, so the lower indices stay valid
        _splice(model, index, 1, [])
    return model


def replace_block(model: PreTrainedModel, start: int, n: int, module: nn.Module) -> PreTrainedModel:
    """Put one ``module`` in place of layers ``start .. start+n-1``, in place; returns ``model``.

    ``module`` is a decoder layer, or any module accepting the same call and returning the
    same output as one. Its ``layer_idx`` attributes are renumbered to its new position.
    A module without attention writes no KV cache; do not put it at position 0, whose cache
    length ``DynamicCache.get_seq_length()`` reads. ``output_hidden_states`` records only
    modules of :func:`decoder_layer_class` that carry transformers' recording hook, which is
    installed at the model's first ``output_hidden_states`` call (a deepcopy of a layer
    copies it).
    """
    check_block(model, start, n, removing=False)
    return _splice(model, start, n, [module])


def sync_config(model: PreTrainedModel) -> None:
    """Make the config and the layers' indices agree with the current layer list.

    Sets ``num_hidden_layers`` (GPT-2's ``n_layer``, through the config's attribute map),
    renumbers every ``layer_idx`` inside each layer (attention, GPT-2 cross-attention,
    gemma3's layer) to the layer's position, and refreshes qwen2's ``has_sliding_layers``.
    ``config.layer_types`` must already list one type per layer (see :func:`remove_layers`).

    Left alone on purpose: qwen2's ``max_window_layers`` and gemma3's ``sliding_window_pattern``
    only generate ``layer_types`` when a config is created without them, and ``layer_types``
    is saved with the config.
    """
    config = model.config
    layers = get_layers(model)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and len(layer_types) != len(layers):
        raise ValueError(
            f"config.layer_types has {len(layer_types)} entries but the model has {len(layers)} layers; "
            "edit the layer list with remove_layers or replace_block, which keep layer_types in step."
        )
    config.num_hidden_layers = len(layers)
    for index, layer in enumerate(layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    # Qwen2Model computes this once in __init__ and skips the sliding-window mask when False.
    owner, _ = layers_owner(model)
    if hasattr(owner, "has_sliding_layers"):
        owner.has_sliding_layers = "sliding_attention" in config.layer_types
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        warnings.warn(
            "GPT-2 scale_attn_by_inverse_layer_idx=True: each attention's 1/(layer_idx+1) scaling was fixed when "
            "it was built and stays right in memory, but reloading a saved checkpoint recomputes it from the "
            "renumbered layer_idx, so the reloaded model will not reproduce this one.",
            stacklevel=2,
        )
