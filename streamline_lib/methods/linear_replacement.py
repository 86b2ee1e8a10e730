"""ReplaceMe: a removed block's work, done by a linear map folded into the layer before it.

Shopkhoev et al. (2025, arXiv 2505.02819) remove a block of ``n`` layers and, without
any training, estimate one ``d x d`` matrix ``T`` by least squares on calibration text,
then multiply it into the output projection of the MLP of the last kept layer
(``start - 1``). No module is added: the pruned model is a plain, smaller model of the
original architecture, which loads and exports like the original.

Why the MLP output: layer ``start - 1`` ends with ``h_start = r + M``, where ``r`` is
its residual stream after attention and ``M`` its MLP's output. The block then adds
``h_{start+n} - h_start``. If ``M`` became ``Y = M + h_{start+n} - h_start``, the layer
would land on the block's output directly. ``T = argmin ||M T - Y||^2`` is the best
linear approximation of that, over every calibration token, from the normal equations
``(M^T M) T = M^T Y`` accumulated in float64 batch by batch (memory ``O(d^2)``, not
``O(tokens x d)``). Folding is exact: ``x W^T T = x (T^T W)^T``, so ``W`` becomes
``T^T W`` (and a bias ``b`` becomes ``T^T b``).

As in the library's MSE training (:attr:`streamline_lib.methods.training.TrainConfig.mse_skip_tokens`),
the first ``skip_tokens`` positions of every sequence are left out of the fit: the
attention sink's hidden state is thousands of times larger than the others and would
decide ``T`` alone.

Architectures whose MLP output is normalised before the residual sum (Gemma 3's
``post_feedforward_layernorm``) cannot take the fold and are refused.
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..architecture.hidden_states import iter_hidden_states
from ..architecture.layers import check_block, get_layers
from ..data.text_data import check_token_ids
from .training import check_finite_weights

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["MLP_OUTPUTS", "LinearFit", "check_linear_block", "fit_linear_map", "fold_linear_map"]

MLP_OUTPUTS: dict[str, str] = {
    "llama": "mlp.down_proj",
    "mistral": "mlp.down_proj",
    "qwen2": "mlp.down_proj",
    "phi3": "mlp.down_proj",
    "opt": "fc2",
    "gpt2": "mlp.c_proj",
    "gpt_neox": "mlp.dense_4h_to_h",
}
"""model_type -> the MLP's output projection inside one decoder layer, whose output is added
to the residual stream unchanged (the place a linear map can be folded into)."""


@dataclass(frozen=True)
class LinearFit:
    """How well the fitted map reproduces the block's output on the calibration tokens."""

    tokens: int  # calibration positions in the fit (skipped positions excluded)
    removal_error: float  # mean squared error of h_{start+n} with the block simply removed
    fitted_error: float  # the same with the fitted map (with ridge=0 never above removal_error: T = I is removal)
    ridge: float  # the regularisation used, relative to the mean diagonal of M^T M
    seconds: float  # wall time of the fit (one forward pass up to the block's end, and a d x d solve)


def _mlp_output(model: PreTrainedModel, layer: nn.Module) -> nn.Module:
    model_type = model.config.model_type
    if model_type not in MLP_OUTPUTS:
        raise ValueError(
            f"the linear replacement (ReplaceMe) folds its map into the MLP's output projection, but "
            f"{model_type!r} has no entry in MLP_OUTPUTS (supported: {', '.join(sorted(MLP_OUTPUTS))}); Gemma 3 "
            "normalises the MLP output before the residual sum, so no projection can take the map: use "
            "replacement 'none', 'ffn' or 'layer' instead"
        )
    return operator.attrgetter(MLP_OUTPUTS[model_type])(layer)


def check_linear_block(model: PreTrainedModel, start: int, n: int) -> None:
    """Refuse a block the map cannot stand in for: invalid, or with no layer before it."""
    check_block(model, start, n, removing=True)
    if start == 0:
        raise ValueError(
            "start=0: the linear replacement (ReplaceMe) folds its map into the MLP of the layer before the "
            "block, and layer 0 has none before it; choose a block with start >= 1"
        )
    _mlp_output(model, get_layers(model)[start - 1])  # refuses an architecture the map cannot be folded into


@torch.no_grad()
def fit_linear_map(
    model: PreTrainedModel,
    start: int,
    n: int,
    sequences: torch.Tensor,
    ridge: float = 1e-4,
    skip_tokens: int = 1,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[torch.Tensor, LinearFit]:
    """The least-squares map ``T`` (``d x d``, float64) for removing layers ``start .. start+n-1``.

    ``sequences`` ``(num_seqs, seq_len)`` are calibration tokens (e.g. the corpus's
    ``train`` split). ``ridge`` is added to the diagonal of ``M^T M`` in units of its
    mean diagonal (a small value keeps the solve stable when some directions of ``M``
    are rare). ``model`` is not changed.
    """
    check_linear_block(model, start, n)
    if not 0 <= skip_tokens < sequences.shape[-1]:
        raise ValueError(f"skip_tokens={skip_tokens} must leave at least one of the {sequences.shape[-1]} positions")
    if ridge < 0:
        raise ValueError(f"ridge={ridge} must be >= 0")
    check_token_ids(model, sequences)
    began = time.perf_counter()
    projection = _mlp_output(model, get_layers(model)[start - 1])
    captured: list[torch.Tensor] = []
    handle = projection.register_forward_hook(lambda module, args, output: captured.append(output))
    d = model.config.hidden_size
    mtm = torch.zeros(d, d, dtype=torch.float64)
    mty = torch.zeros(d, d, dtype=torch.float64)
    yty = removal = 0.0
    tokens = 0
    try:
        for states in iter_hidden_states(model, sequences, batch_size, up_to=start + n, progress=progress,
                                         desc="fitting the linear map"):
            # OPT flattens (batch, seq) inside its MLP: give the output the hidden states' shape back.
            m = captured.pop().reshape(states[start].shape)[:, skip_tokens:].reshape(-1, d).double().cpu()
            step = (states[start + n] - states[start])[:, skip_tokens:].reshape(-1, d).double().cpu()
            y = m + step
            mtm += m.T @ m
            mty += m.T @ y
            yty += float((y * y).sum())
            removal += float((step * step).sum())
            tokens += len(m)
    finally:
        handle.remove()
    regularised = mtm + ridge * mtm.diagonal().mean() * torch.eye(d, dtype=torch.float64)
    t = torch.linalg.solve(regularised, mty)
    check_finite_weights({"T": t}, "the least-squares map (ReplaceMe)",
                         "its hidden states or the solve overflowed: check the model's weights and the sequences, "
                         "raise ridge, or use a float32 model")
    # ||M T - Y||^2 from the accumulated products, without a second pass over the tokens.
    fitted = float((t * (mtm @ t)).sum() - 2 * (t * mty).sum()) + yty
    elements = tokens * d
    return t, LinearFit(tokens, removal / elements, max(fitted, 0.0) / elements, ridge, time.perf_counter() - began)


@torch.no_grad()
def fold_linear_map(model: PreTrainedModel, layer_index: int, t: torch.Tensor) -> None:
    """Multiply ``t`` into the MLP output projection of layer ``layer_index`` of ``model``, in place."""
    from transformers.pytorch_utils import Conv1D

    projection = _mlp_output(model, get_layers(model)[layer_index])
    t = t.to(torch.float64)
    weight = projection.weight.double()
    if isinstance(projection, Conv1D):  # GPT-2 stores (in, out): y = x W + b
        projection.weight.copy_(weight @ t)
        if projection.bias is not None:
            projection.bias.copy_(projection.bias.double() @ t)
    elif isinstance(projection, nn.Linear):  # y = x W^T + b
        projection.weight.copy_(t.T @ weight)
        if projection.bias is not None:
            projection.bias.copy_(t.T @ projection.bias.double())
    else:
        raise TypeError(f"cannot fold a linear map into a {type(projection).__name__}; expected nn.Linear or Conv1D")
