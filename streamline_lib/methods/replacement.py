"""The lightweight networks that LLM-Streamline puts in place of a removed block of layers.

A block of ``n`` decoder layers maps ``h_start`` to ``h_{start+n}``; after pruning, one
small module takes its place and is trained to do the same (:mod:`streamline_lib.methods.training`).
The variants compared in the paper, by their public names (:data:`REPLACEMENTS`):

* ``none``: plain removal, no module (what ShortGPT and Gromov et al. do);
* ``ffn``: a SwiGLU MLP shaped like the model's own, ``d -> intermediate -> d``;
* ``ffn_relu``: the ReLU MLP of the authors' example, ``Linear(d, 4d) -> ReLU -> Linear(4d, d)``, in
  this library's residual, normed form (below): not the authors' network;
* ``ffn_authors``: the authors' network as their code builds it, ``fc2(relu(fc1(h)))``,
  ``d -> 4d -> d``, with no residual connection, no norm and PyTorch's default initialisation
  (:class:`PlainFFN`): it must learn to output the whole hidden state, and untrained it is far
  from plain removal;
* ``layer``: one decoder layer of the model's own class, a copy of the first removed
  layer (the authors' default);
* ``linear``: no module at all: ReplaceMe's least-squares linear map, folded into the
  MLP output projection of the layer before the block
  (:mod:`streamline_lib.methods.linear_replacement`), so the pruned model is a plain model.

This library's FFN variants (``ffn``, ``ffn_relu``) are **residual**, ``h + f(norm(h))``, with a fresh pre-norm of the
model's own norm class. The block they stand in for is itself a stack of residual
updates: ``h_{start+n} = h_start + sum of the layers' updates``, and in a redundant
block (high cosine similarity between ``h_start`` and ``h_{start+n}``) that sum is
small next to ``h_start``. So the module only has to learn the small update, not
reproduce the whole large hidden state, and the untrained module can be made to
equal plain removal (``f = 0``), a baseline training can only improve on. The norm
matters because hidden-state norms grow with depth: without it the MLP would see
inputs of very different scale at different depths and in different models.

Initialisation (deterministic with ``seed``): fresh weights with the **last projection
zero**, so the untrained module is exactly plain removal and only the training moves
it away. An ``ffn`` that starts as a copy of the first removed layer's MLP (the
layer without its attention) was this library's earlier choice for llama-style
models; on SmolLM2-135M at 25% it starts *worse* than removal (the MLP's update
was tuned for a hidden state that attention had already changed) and stays behind
the zero start all through training (with the book's budget, held-out perplexity
50.7 vs 44.3 with the library's loss, 55.6 vs 51.0 with the paper's; the
replacement chapter shows the run).

Every module here takes a decoder layer's call, ``(hidden_states, *args, **kwargs)``,
ignores everything but the hidden states (positional arguments of GPT-2, ``layer_past``
of GPT-NeoX, masks, rotary embeddings, the KV cache) and returns a tensor, as every
supported architecture's decoder layers do in transformers 5 (the models' forward
takes ``hidden_states = layer(...)`` as a tensor). So no per-architecture wrapper is
needed. They write no KV cache, so they may not sit at position 0, whose cache length
``generate`` reads.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional

from ..architecture.layers import check_block, final_norm, get_layers
from .linear_replacement import check_linear_block
from .sparsity import layers_for_sparsity, parameter_budget

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "NO_MODULE", "REPLACEMENTS", "FFN_KINDS", "SwiGLU", "ResidualFFN", "PlainFFN", "check_replacement",
    "is_llama_style", "make_ffn_like", "make_replacement", "replacement_parameters", "layers_to_replace",
]

REPLACEMENTS: tuple[str, ...] = ("none", "ffn", "ffn_relu", "ffn_authors", "layer", "linear")
"""The replacement variants, by public name; see the module docstring."""

FFN_KINDS: tuple[str, ...] = ("ffn", "ffn_relu", "ffn_authors")
"""The replacements that are a feed-forward network (:func:`make_ffn_like` builds them)."""

NO_MODULE: tuple[str, ...] = ("none", "linear")
"""The replacements that leave no module where the block was: the block's layers are removed."""


def check_replacement(kind: str) -> None:
    """Raise ``ValueError`` unless ``kind`` is one of :data:`REPLACEMENTS`."""
    if kind not in REPLACEMENTS:
        raise ValueError(f"unknown replacement {kind!r}; choose one of: {', '.join(REPLACEMENTS)}")


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``: the llama-family MLP, with llama's attribute names."""

    def __init__(self, gate_proj: nn.Linear, up_proj: nn.Linear, down_proj: nn.Linear) -> None:
        super().__init__()
        self.gate_proj = gate_proj
        self.up_proj = up_proj
        self.down_proj = down_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(functional.silu(self.gate_proj(x)) * self.up_proj(x))


class ResidualFFN(nn.Module):
    """``h + mlp(norm(h))``, called like a decoder layer; see the module docstring."""

    def __init__(self, norm: nn.Module, mlp: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.mlp = mlp

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states + self.mlp(self.norm(hidden_states))


class PlainFFN(nn.Module):
    """``fc2(relu(fc1(h)))``, called like a decoder layer: the authors' FFN, no residual and no norm."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear) -> None:
        super().__init__()
        self.fc1 = fc1
        self.fc2 = fc2

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.fc2(functional.relu(self.fc1(hidden_states)))


def _linear(d_in: int, d_out: int, bias: bool, generator: torch.Generator, zero: bool = False,
            default_bias: bool = False) -> nn.Linear:
    """A float32 CPU ``nn.Linear`` initialised as PyTorch does, from ``generator`` (zero if ``zero``).

    Biases start at zero, or with ``default_bias`` as PyTorch draws them (uniform within
    ``1/sqrt(d_in)``). The global random state is neither used nor advanced.
    """
    linear = nn.utils.skip_init(nn.Linear, d_in, d_out, bias=bias)
    with torch.no_grad():
        if zero:
            linear.weight.zero_()
        else:
            nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
        if bias and default_bias:
            bound = 1 / math.sqrt(d_in)
            nn.init.uniform_(linear.bias, -bound, bound, generator=generator)
        elif bias:
            linear.bias.zero_()
    return linear


def _fresh_norm(model: PreTrainedModel, hidden: int) -> nn.Module:
    """A new norm of the model's own class and epsilon, at its identity initialisation.

    The class is the final norm's (LayerNorm or the architecture's RMSNorm, e.g. Gemma's
    ``1 + weight`` variant); all of them take ``(hidden_size, eps)``. OPT checkpoints
    without a final norm get a LayerNorm, their architecture's kind.
    """
    norm = final_norm(model)
    if norm is None:
        return nn.LayerNorm(hidden)
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon")
    return type(norm)(hidden, eps)


def is_llama_style(layer: nn.Module, config) -> bool:
    """Whether decoder ``layer`` is ``h + mlp(post_attention_layernorm(h))`` with a SiLU gated MLP.

    True for llama, mistral and qwen2: their ``ffn`` replacement exports as a plain decoder
    layer with a zero attention output (:mod:`streamline_lib.export`).
    """
    mlp = getattr(layer, "mlp", None)
    return (
        all(isinstance(getattr(mlp, name, None), nn.Linear) for name in ("gate_proj", "up_proj", "down_proj"))
        and hasattr(layer, "post_attention_layernorm")
        and not hasattr(layer, "post_feedforward_layernorm")  # gemma3 normalises the MLP output too
        and getattr(config, "hidden_act", None) == "silu"
    )


def make_ffn_like(model: PreTrainedModel, kind: str, seed: int = 0) -> ResidualFFN | PlainFFN:
    """A freshly initialised FFN of one of :data:`FFN_KINDS` for ``model``, with its dtype and device.

    Untrained, ``ffn`` and ``ffn_relu`` are plain removal (last projection zero);
    ``ffn_authors`` has PyTorch's default initialisation, as the authors' code. This is what
    :func:`make_replacement` returns for these kinds, and also the skeleton a saved
    replacement's weights load into (it works on the ``meta`` device).
    """
    if kind not in FFN_KINDS:
        raise ValueError(f"make_ffn_like builds one of {', '.join(FFN_KINDS)}, not {kind!r}")
    generator = torch.Generator().manual_seed(seed)
    hidden = model.config.hidden_size
    if kind == "ffn_authors":
        plain = PlainFFN(_linear(hidden, 4 * hidden, True, generator, default_bias=True),
                         _linear(4 * hidden, hidden, True, generator, default_bias=True))
        return plain.to(device=model.device, dtype=model.dtype)
    if kind == "ffn":
        inner = getattr(model.config, "intermediate_size", None) or 4 * hidden
        mlp = SwiGLU(
            _linear(hidden, inner, False, generator),
            _linear(hidden, inner, False, generator),
            _linear(inner, hidden, False, generator, zero=True),
        )
    else:
        mlp = nn.Sequential(
            _linear(hidden, 4 * hidden, True, generator),
            nn.ReLU(),
            _linear(4 * hidden, hidden, True, generator, zero=True),
        )
    return ResidualFFN(_fresh_norm(model, hidden), mlp).to(device=model.device, dtype=model.dtype)


def make_replacement(model: PreTrainedModel, start: int, n: int, kind: str, seed: int = 0) -> nn.Module | None:
    """The ``kind`` replacement for layers ``start .. start+n-1`` of ``model`` (untrained), or ``None``.

    ``None`` for ``kind="none"`` (plain removal) and ``"linear"`` (the block is removed and a
    map folded into layer ``start - 1``: :func:`streamline_lib.methods.pruning.prune` does that). ``model`` is the dense model, which
    is not changed: the ``layer`` replacement and the llama-style ``ffn`` are copies of
    parts of layer ``start``. The module has the model's dtype and device; put it in
    place with :func:`streamline_lib.architecture.layers.replace_block`. ``seed`` drives the fresh
    initialisations.
    """
    check_replacement(kind)
    if kind == "linear":
        check_linear_block(model, start, n)
    check_block(model, start, n, removing=kind in NO_MODULE)
    if kind in NO_MODULE:
        return None
    layer = get_layers(model)[start]
    if kind == "layer":
        return copy.deepcopy(layer)
    if start == 0:
        raise ValueError(
            f"replacement {kind!r} at start=0: an FFN has no attention, so it would write no KV cache at "
            "position 0, where generate reads the cache length; prune a block with start >= 1, "
            "or use replacement 'layer' or 'none'"
        )
    return make_ffn_like(model, kind, seed)


def replacement_parameters(model: PreTrainedModel, kind: str) -> int:
    """How many parameters a ``kind`` replacement puts back in place of the block it replaces.

    0 for ``none`` and ``linear`` (the fold changes a kept layer's weights, not their
    number); one decoder layer at the mean layer size (as
    :func:`~streamline_lib.methods.sparsity.layers_for_sparsity` counts layers) for
    ``layer``; the FFN's size for :data:`FFN_KINDS`, counted from its shapes without
    building it, so that sizing a block for a 7B model allocates nothing. Pass it to
    :func:`~streamline_lib.methods.sparsity.layers_for_sparsity` to size a block whose
    net removal meets a sparsity target.
    """
    check_replacement(kind)
    if kind in NO_MODULE:
        return 0
    if kind == "layer":
        budget = parameter_budget(model)
        return round(budget.layers / len(budget.per_layer))
    hidden = model.config.hidden_size
    if kind == "ffn_authors":
        return 2 * 4 * hidden * hidden + 4 * hidden + hidden  # fc1 and fc2 with their biases
    norm = sum(p.numel() for p in _fresh_norm(model, hidden).parameters())
    if kind == "ffn":
        inner = getattr(model.config, "intermediate_size", None) or 4 * hidden
        return 3 * hidden * inner + norm  # gate, up and down, no biases
    return 2 * 4 * hidden * hidden + 4 * hidden + hidden + norm  # ffn_relu: the authors' shapes, normed


def layers_to_replace(model: PreTrainedModel, sparsity: float, kind: str, count: str = "total") -> int:
    """How many consecutive layers a ``kind`` replacement takes the place of, to remove ``sparsity`` net.

    :func:`~streamline_lib.methods.sparsity.layers_for_sparsity` with the replacement's
    :func:`replacement_parameters`: plain removal takes out ``n`` layers and a ``layer``
    replacement ``n + 1`` (the authors' convention), so that comparisons between them are
    made at equal removed parameters.
    """
    return layers_for_sparsity(model, sparsity, count, added_parameters=replacement_parameters(model, kind))
