"""ReplaceMe: a removed block's work, done by a linear map folded into the layer before it.

Shopkhoev et al. (2025, arXiv 2505.02819) remove a block of ``n`` layers and, without
any training, estimate one ``d x d`` matrix ``T`` on calibration text, then multiply it
into the output projection of the MLP of the last kept layer (``start - 1``). No module
is added: the pruned model is a plain, smaller model of the original architecture,
which loads and exports like the original.

Why the MLP output: layer ``start - 1`` ends with ``h_start = r + M``, where ``r`` is
its residual stream after attention and ``M`` its MLP's output. The block then adds
``h_{start+n} - h_start``. If ``M`` became ``Y = M + h_{start+n} - h_start``, the layer
would land on the block's output directly. Folding is exact: ``x W^T T = x (T^T W)^T``,
so ``W`` becomes ``T^T W`` (and a bias ``b`` becomes ``T^T b``). Two ways to find ``T``
(``loss``), the two of the paper and of its reference implementation
(github.com/mts-ai/ReplaceMe, ``ReplaceMe/lstsq.py``, ``cosine_dist.py`` and ``utils.py``):

* ``"lstsq"`` (the reference's recommended default): ``T = argmin ||M T - Y||^2`` over every
  calibration token, from the normal equations ``(M^T M) T = M^T Y`` accumulated in
  float64 batch by batch (memory ``O(d^2)``, not ``O(tokens x d)``). The reference does the
  same and solves them with no regularisation (``alpha: 0`` in all its configurations; it
  inverts ``M^T M + alpha I`` in float64), and so does the default here (``ridge=0``, solved
  with ``torch.linalg.solve``); ``ridge`` stays as an option. Evidence in :func:`fit_linear_map`.
* ``"cosine"`` (the paper's best in its Llama 2 7B table: 93.1% of the accuracy kept,
  against 91.9% for least squares): ``T`` minimises the mean cosine distance
  ``1 - cos(M T, Y)`` over the calibration tokens. ``Y = h_{start+n} - r``, so this is the
  simplification the reference runs by default (``accurate: False``: "cosine(xA, y - z)
  where z is the residual attention info") of the objective on the layer's output,
  ``1 - cos(M T + r, h_{start+n})`` (``accurate: True``), which
  :attr:`CosineConfig.with_residual` selects. There is no closed form; as in the
  reference, Adam starts from ``T = I`` (plain removal) and takes steps of 1,024 shuffled
  tokens at learning rate 1e-4 for 10 epochs (:class:`CosineConfig`). The activations are
  stored once (float32: in RAM up to :attr:`CosineConfig.memory_gb`, else in a temporary
  file on disk), so the epochs cost no further forward passes. **On SmolLM2-135M the
  reference's default objective fails**: it ignores the norm of ``M T``, Adam keeps that
  norm near ``M``'s (0.3 of ``Y``'s on held-out tokens, against 0.74 for least squares),
  and the residual ``r`` then dominates the pruned layer's output; the better the cosine
  is minimised, the worse the model (numbers in :class:`CosineConfig`).

As in the library's MSE training (:attr:`streamline_lib.methods.training.TrainConfig.mse_skip_tokens`),
the first ``skip_tokens`` positions of every sequence are left out of the fit: the
attention sink's hidden state is thousands of times larger than the others and would
weigh heavily in ``M^T M``. The reference skips nothing (it even keeps the padding of
its batches); ``skip_tokens=0`` does the same.

Architectures whose MLP output is normalised before the residual sum (Gemma 3's
``post_feedforward_layernorm``) cannot take the fold and are refused.
"""

from __future__ import annotations

import math
import operator
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional

from ..architecture.hidden_states import iter_hidden_states
from ..architecture.layers import check_block, get_layers
from ..core.progress import progress_bar
from ..data.text_data import check_token_ids
from .training import allocate_buffer, check_finite_weights

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["MLP_OUTPUTS", "LINEAR_LOSSES", "CosineConfig", "LinearFit", "check_linear_block", "fit_linear_map",
           "fold_linear_map"]

#: How :func:`fit_linear_map` finds ``T``: least squares (closed form) or cosine distance (Adam).
LINEAR_LOSSES: tuple[str, ...] = ("lstsq", "cosine")

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
class CosineConfig:
    """How ``loss="cosine"`` optimises ``T``: by default as the reference implementation does.

    The reference (``adam_method`` in its ``utils.py``, with its ``Replace_Me_pipeline_cosine``
    configuration) starts from the identity and runs Adam (learning rate 1e-4, no weight
    decay, no schedule) in float32 for 10 epochs over the calibration tokens, reshuffled
    every epoch, 1,024 tokens a step. Its calibration set is far larger than a CPU's
    (8,000 SlimOrca conversations of up to 1,024 tokens: thousands of steps an epoch).

    Measured on SmolLM2-135M, bfloat16, block 10-18 removed, held-out perplexity on 64 x 256
    Wikipedia tokens (plain removal 233.9; least squares 109.0 on 8,192 training tokens, 85.7
    on 262,144; ``benchmarks/linear_replacement.py``): these defaults give 663 (80 steps) and
    15,856 (2,550 steps, cosine distance 0.66 -> 0.29); ten times the learning rate or ten
    times the epochs on 8,192 tokens give 15,000-17,000. ``with_residual=True`` gives 382 and
    115.7: better than plain removal on the larger set, never as good as least squares.
    """

    epochs: int = 10  # passes over the calibration tokens (reference: 10)
    lr: float = 1e-4  # Adam's learning rate (reference: 1e-4)
    batch_tokens: int = 1024  # token positions per Adam step (reference: 1,024)
    seed: int = 0  # the shuffling (the start, T = I, is fixed)
    # False: minimise 1 - cos(M T, h_{start+n} - r), the paper's simplified objective and the
    # reference's default; True: 1 - cos(M T + r, h_{start+n}), the cosine of the state the pruned
    # layer outputs (the reference's accurate=True; stores r as well: a third more memory).
    with_residual: bool = False
    memory_gb: float = 4.0  # stored activations up to this size stay in RAM, larger go to a temporary file

    def __post_init__(self) -> None:
        checks = {
            "epochs": (self.epochs >= 1, "a positive integer"),
            "lr": (self.lr > 0, "> 0"),
            "batch_tokens": (self.batch_tokens >= 1, "a positive integer"),
            "memory_gb": (self.memory_gb >= 0, ">= 0 (0 puts the activations on disk)"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"CosineConfig.{name}={getattr(self, name)!r} is invalid: it must be {expected}")


@dataclass(frozen=True)
class LinearFit:
    """How well the fitted map reproduces the block's output on the calibration tokens."""

    tokens: int  # calibration positions in the fit (skipped positions excluded)
    removal_error: float  # mean squared error of h_{start+n} with the block simply removed
    # The same with the fitted map (for lstsq with ridge=0 never above removal_error: T = I is removal;
    # the cosine map can be above it, since it ignores the norms).
    fitted_error: float
    ridge: float  # the regularisation used, relative to the mean diagonal of M^T M (0 for cosine)
    seconds: float  # wall time of the fit (one forward pass up to the block's end, then a solve or Adam)
    loss: str = "lstsq"  # one of LINEAR_LOSSES
    steps: int = 0  # Adam steps (cosine; 0 for the closed-form lstsq)
    # cosine: the mean cosine distance of the objective minimised, with T = I (plain removal) and with
    # the fitted map; None for lstsq, which stores no activations to compute them on.
    removal_cosine: float | None = None
    fitted_cosine: float | None = None


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


class _Activations:
    """The fit's rows ``M``, ``Y`` (and ``r``), float32 on the CPU: in RAM, or memory-mapped to ``directory``."""

    def __init__(self, rows: int, d: int, with_residual: bool, directory: str | None) -> None:
        names = ("m", "y", "r") if with_residual else ("m", "y")
        self.arrays = {name: allocate_buffer((rows, d), torch.float32, directory, f"linear_map_{name}")
                       for name in names}
        self.rows = 0

    def add(self, **batch: torch.Tensor | None) -> None:
        size = len(batch["m"])
        for name, array in self.arrays.items():
            array[self.rows : self.rows + size].copy_(batch[name])
        self.rows += size

    def take(self, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(M, target, offset)`` of the rows ``indices``: the objective is ``1 - cos(M T + offset, target)``."""
        m, y = (self.arrays[name][indices].to(device) for name in ("m", "y"))
        if "r" not in self.arrays:
            return m, y, torch.zeros((), device=device)
        r = self.arrays["r"][indices].to(device)
        return m, y + r, r  # cos(M T + r, h_{start+n}): h_{start+n} = Y + r


def _cosine_distance(activations: _Activations, t: torch.Tensor, batch_tokens: int) -> float:
    """The mean of ``1 - cos(M t + offset, target)`` over every stored row, in float32 on ``t``'s device."""
    total = 0.0
    for indices in torch.arange(activations.rows).split(max(batch_tokens, 4096)):
        m, target, offset = activations.take(indices, t.device)
        total += float((1 - functional.cosine_similarity(m @ t + offset, target, dim=-1)).sum())
    return total / activations.rows


def _optimise_cosine(activations: _Activations, d: int, config: CosineConfig, device: torch.device,
                     progress: bool) -> tuple[torch.Tensor, int]:
    """Adam on ``1 - cos(M T + offset, target)`` from ``T = I``, in float32: the map and the steps taken."""
    t = torch.eye(d, dtype=torch.float32, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([t], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    per_epoch = math.ceil(activations.rows / config.batch_tokens)

    def batches() -> Iterator[torch.Tensor]:
        for _ in range(config.epochs):
            for indices in torch.randperm(activations.rows, generator=generator).split(config.batch_tokens):
                yield indices.sort().values  # the same rows in file order: sequential reads from disk

    steps = 0
    with torch.enable_grad():
        for indices in progress_bar(batches(), "fitting the linear map (cosine)", enabled=progress,
                                    total=config.epochs * per_epoch):
            m, target, offset = activations.take(indices, device)
            loss = 1 - functional.cosine_similarity(m @ t + offset, target, dim=-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    return t.detach(), steps


@torch.no_grad()
def fit_linear_map(
    model: PreTrainedModel,
    start: int,
    n: int,
    sequences: torch.Tensor,
    ridge: float = 0.0,
    skip_tokens: int = 1,
    batch_size: int = 8,
    progress: bool = True,
    *,
    loss: str = "lstsq",
    cosine: CosineConfig | None = None,
) -> tuple[torch.Tensor, LinearFit]:
    """ReplaceMe's map ``T`` (``d x d``, float64) for removing layers ``start .. start+n-1``.

    ``sequences`` ``(num_seqs, seq_len)`` are calibration tokens (e.g. the corpus's
    ``train`` split). ``loss`` is one of :data:`LINEAR_LOSSES` (see the module docstring):
    ``"lstsq"`` solves the least-squares problem in closed form, ``"cosine"`` minimises the
    cosine distance with Adam as ``cosine`` (default :class:`CosineConfig`) says,
    deterministically for its seed. ``model`` is not changed.

    ``ridge`` (lstsq only) is added to the diagonal of ``M^T M`` in units of its mean
    diagonal. The default 0 is the reference's plain least squares: on SmolLM2-135M,
    bfloat16, block 10-18 (``benchmarks/linear_replacement.py``), ``M^T M`` has eigenvalues
    from 3.3e2 to 6.2e6 on 8,160 tokens and from 1.3e4 to 2.2e8 on 261,120 (condition number
    1.9e4 and 1.7e4, harmless in float64: the solve is finite in bfloat16 and float32), and the
    held-out perplexity (64 x 256 tokens) with ridge 0 and ridge 1e-4 (the former default)
    is 109.0 and 108.9 on 8,192 training tokens (float32: 109.2 both), 85.70 and 85.73 on
    262,144 (plain removal: 233.9). Raise it only with far fewer tokens than ``d``, where ``M^T M`` is singular.

    ``skip_tokens`` leading positions of every sequence are left out (see the module
    docstring); the reference's 0 gives 823 instead of 109 on the 8,192 tokens above, the
    attention sink's state deciding ``T``.
    """
    check_linear_block(model, start, n)
    if not 0 <= skip_tokens < sequences.shape[-1]:
        raise ValueError(f"skip_tokens={skip_tokens} must leave at least one of the {sequences.shape[-1]} positions")
    if loss not in LINEAR_LOSSES:
        raise ValueError(f"loss={loss!r}: choose one of {', '.join(map(repr, LINEAR_LOSSES))}")
    if ridge < 0:
        raise ValueError(f"ridge={ridge} must be >= 0")
    if loss == "cosine" and ridge != 0:
        raise ValueError(f"ridge={ridge} regularises the least-squares solve; loss='cosine' has none: drop ridge")
    if loss == "lstsq" and cosine is not None:
        raise ValueError("cosine settings apply to loss='cosine'; pass loss='cosine' or drop cosine")
    config = cosine or CosineConfig()
    check_token_ids(model, sequences)
    began = time.perf_counter()
    projection = _mlp_output(model, get_layers(model)[start - 1])
    captured: list[torch.Tensor] = []
    d = model.config.hidden_size
    mtm = torch.zeros(d, d, dtype=torch.float64)
    mty = torch.zeros(d, d, dtype=torch.float64)
    yty = removal = 0.0
    tokens = 0
    with ExitStack() as stack:
        activations = None
        if loss == "cosine":
            rows = len(sequences) * (sequences.shape[-1] - skip_tokens)
            on_disk = rows * d * 4 * (3 if config.with_residual else 2) > config.memory_gb * 2**30
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="linear_map_")) if on_disk else None
            activations = _Activations(rows, d, config.with_residual, directory)
        handle = projection.register_forward_hook(lambda module, args, output: captured.append(output))
        stack.callback(handle.remove)
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
            if activations is not None:
                residual = None if not config.with_residual else (  # r = h_start - M
                    states[start][:, skip_tokens:].reshape(-1, d).double().cpu() - m)
                activations.add(m=m, y=y, r=residual)
        removal_cosine = fitted_cosine = None
        steps = 0
        if activations is None:
            regularised = mtm + ridge * mtm.diagonal().mean() * torch.eye(d, dtype=torch.float64)
            t = torch.linalg.solve(regularised, mty)
        else:
            device = next(model.parameters()).device
            identity = torch.eye(d, dtype=torch.float32, device=device)
            removal_cosine = _cosine_distance(activations, identity, config.batch_tokens)
            learned, steps = _optimise_cosine(activations, d, config, device, progress)
            fitted_cosine = _cosine_distance(activations, learned, config.batch_tokens)
            t = learned.double().cpu()
    what = f"the {'least-squares' if loss == 'lstsq' else 'cosine-distance'} map (ReplaceMe)"
    fix = ("its hidden states or the solve overflowed: check the model's weights and the sequences, raise ridge, "
           "or use a float32 model" if loss == "lstsq" else
           "its hidden states or Adam's steps overflowed: check the model's weights and the sequences, or lower "
           "CosineConfig.lr")
    check_finite_weights({"T": t}, what, fix)
    # ||M T - Y||^2 from the accumulated products, without a second pass over the tokens.
    fitted = float((t * (mtm @ t)).sum() - 2 * (t * mty).sum()) + yty
    elements = tokens * d
    return t, LinearFit(tokens, removal / elements, max(fitted, 0.0) / elements, ridge, time.perf_counter() - began,
                        loss, steps, removal_cosine, fitted_cosine)


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
