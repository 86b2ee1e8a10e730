"""Share a layer's MLP with the layer below it, plus low-rank recovery parameters (SHARP).

SHARP (Wang et al., arXiv 2502.07832) starts from the same observation as layer
pruning, that adjacent layers compute similar things, but keeps every layer: a
replaced layer runs the MLP *weights* of the layer below it, and small low-rank
recovery parameters of its own (LoRA-style deltas on each MLP projection, made with
peft) make up the difference. The stored MLP parameters of the replaced layers are
gone; the computation is not: every layer still runs a full MLP, plus the recovery's
low-rank products. So sharing saves storage and memory, not arithmetic; whether it
saves time depends on whether reading the weights is the bottleneck (the peers chapter
measures it).

The recovery parameters are fitted in two stages, as in the paper:

* **Single Layer Warm-up (SLW)**: each replaced layer alone, so that the shared MLP
  plus its delta reproduces the original layer's MLP output on the original layer's
  MLP input (both taken from the dense model), with the MSE. Layers are independent;
  the dense pass that gives the inputs and outputs is run once for all of them.
* **Supervised fine-tuning (SFT)**: all recovery parameters together on the
  next-token loss through the whole model.

With ``rank=0`` nothing is added: that is the paper's *direct sharing* baseline.
The model that comes back holds peft's LoRA layers unmerged (merging would give each
layer its own weights again and undo the saving), and the shared weights are the same
tensor objects, so :func:`streamline_lib.methods.sparsity.parameter_budget` counts them once.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional

from ..architecture.hidden_states import iter_hidden_states
from ..architecture.layers import architecture, get_layers, num_layers
from ..core.deprecation import positional_deprecated
from .healing import inject_lora, lora_modules, train_adapters
from .sparsity import check_sparsity, counted_parameters, parameter_budget
from .trained_cache import cached_training, training_key
from .training import TrainConfig, TrainResult, train_module

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["SharpResult", "sharing_pattern", "layers_to_share", "merged_copy", "reference_layers", "sharp"]


def layers_to_share(model: nn.Module, sparsity: float, rank: int, count: str = "total") -> int:
    """How many layers SHARP makes reuse the MLP below them to save ``sparsity`` of the parameters, net.

    Each shared layer saves one MLP minus its rank-``rank`` recovery parameters (one pair of
    low-rank factors per MLP projection); ``count`` says what ``sparsity`` is a fraction of, all
    parameters (``"total"``) or the decoder layers' (``"layers"``). Rounded to the nearest layer,
    at least one: SHARP's counterpart of :func:`~streamline_lib.methods.replacement.layers_to_replace`,
    so that SHARP is compared with the other methods at equal removed parameters.
    """
    check_sparsity(sparsity, count)
    budget = parameter_budget(model)
    mlp = get_layers(model)[0].mlp
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    saved_per_layer = sum(p.numel() for p in mlp.parameters()) - rank * sum(m.in_features + m.out_features
                                                                           for m in linears)
    if saved_per_layer <= 0:
        raise ValueError(f"rank={rank}: the recovery parameters would be as large as the MLP they stand in for; "
                         "use a smaller rank")
    return max(1, math.floor(sparsity * counted_parameters(budget, count) / saved_per_layer + 0.5))


def sharing_pattern(total_layers: int, k: int) -> list[int]:
    """The ``k`` layers to replace, SHARP's "next" strategy from the top of the model down.

    Every second layer from the last (``L-1, L-3, ...``) first, each reusing the layer just
    below it, which keeps its own MLP; only when ``k`` needs more do the layers in between
    follow (``L-2, L-4, ...``), and then several layers share one MLP. Later layers come
    first because the paper found them the safer ones to replace. Layer 0 is never
    replaced: it has no layer below to share with.
    """
    if not 1 <= k <= total_layers - 1:
        raise ValueError(f"k={k} layers cannot share an MLP in a model with {total_layers} layers: layer 0 keeps "
                         f"its own, so use 1 <= k <= {total_layers - 1}")
    order = [*range(total_layers - 1, 0, -2), *range(total_layers - 2, 0, -2)]
    return sorted(order[:k])


def reference_layers(layers: Sequence[int], total_layers: int) -> list[int]:
    """For each replaced layer, the layer whose MLP it reuses: the nearest one below that is not replaced."""
    replaced = set(layers)
    if len(replaced) != len(layers) or not layers:
        raise ValueError(f"layers {list(layers)} must name at least one layer, each once")
    if min(layers) < 1 or max(layers) >= total_layers:
        raise ValueError(f"layers {sorted(layers)} must lie in 1 .. {total_layers - 1}: layer 0 has no layer below "
                         f"to share with, and the model has {total_layers} layers")
    references = []
    for index in layers:
        reference = index - 1
        while reference in replaced:
            reference -= 1
        references.append(reference)
    return references


@dataclass(frozen=True)
class SharpResult:
    """A model whose replaced layers run another layer's MLP weights, and how it was fitted."""

    model: PreTrainedModel  # a new model; the dense one is unchanged
    layers: tuple[int, ...]  # the replaced layers, in increasing order
    references: tuple[int, ...]  # per replaced layer, the layer whose MLP weights it runs
    rank: int  # rank of the recovery parameters; 0 is direct sharing
    recovery_parameters: int  # the low-rank matrices of all replaced layers together
    slw_results: tuple[TrainResult, ...]  # per replaced layer; empty without warm-up
    sft_result: TrainResult | None  # None without fine-tuning


def merged_copy(result: SharpResult) -> PreTrainedModel:
    """A plain copy of ``result.model``: every layer's MLP its own tensors, the recovery updates merged in.

    This is what an export stores (every architecture loads it); sharing saves memory only
    while the model runs with the shared tensors, which a checkpoint format cannot express.
    """
    from peft.tuners.lora import LoraLayer

    model = copy.deepcopy(result.model)
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            plain = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                              device=base.weight.device, dtype=base.weight.dtype)
            with torch.no_grad():
                plain.weight.copy_(base.weight + module.get_delta_weight("default").to(base.weight.dtype))
                if base.bias is not None:
                    plain.bias.copy_(base.bias)
            owner, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(owner), attribute, plain)
    for mlp in (_mlp(layer) for layer in get_layers(model)):  # untie what plain layers still share
        for owner in list(mlp.modules()):
            for attribute, param in list(owner.named_parameters(recurse=False)):
                setattr(owner, attribute, nn.Parameter(param.detach().clone()))
    return model


def _mlp(layer: nn.Module) -> nn.Module:
    mlp = getattr(layer, "mlp", None)
    if mlp is None or not any(isinstance(m, nn.Linear) for m in mlp.modules()):
        raise ValueError(f"{type(layer).__name__} has no MLP of nn.Linear projections at .mlp, which SHARP shares "
                         "and adds low-rank deltas to; supported: llama-style models, Gemma 3, Qwen2, Phi-3, GPT-NeoX")
    return mlp


def _share(model: PreTrainedModel, layers: Sequence[int], references: Sequence[int]) -> PreTrainedModel:
    """A copy of ``model`` in which each of ``layers`` has a new MLP holding its reference's very tensors."""
    shared = copy.deepcopy(model)
    decoder = get_layers(shared)
    for index, reference in zip(layers, references):
        source = _mlp(decoder[reference])
        mlp = copy.deepcopy(source)  # its own modules (peft wraps them), then the source's parameters put in
        for name, param in source.named_parameters():
            owner, _, attribute = name.rpartition(".")
            setattr(mlp.get_submodule(owner), attribute, param)
        decoder[index].mlp = mlp
    return shared


@torch.inference_mode()
def _mlp_pairs(dense: PreTrainedModel, layers: Sequence[int], sequences: torch.Tensor, batch_size: int,
               progress: bool) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the dense model's MLP inputs and outputs on ``sequences``, each ``(num_seqs, seq_len, hidden)``."""
    shape = (*sequences.shape, dense.config.hidden_size)
    pairs = {i: (torch.empty(shape, dtype=dense.dtype), torch.empty(shape, dtype=dense.dtype)) for i in layers}
    row = 0

    def recorder(index: int):
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            size = args[0].shape[0]
            pairs[index][0][row : row + size].copy_(args[0])
            pairs[index][1][row : row + size].copy_(output)
        return record

    decoder = get_layers(dense)
    handles = [_mlp(decoder[i]).register_forward_hook(recorder(i)) for i in layers]
    try:
        for states in iter_hidden_states(dense, sequences, batch_size, up_to=max(layers) + 1, progress=progress,
                                         desc="dense MLP inputs and outputs"):
            row += states[0].shape[0]
    finally:
        for handle in handles:
            handle.remove()
    return pairs


class _WarmupObjective:
    """MSE between a replaced layer's shared MLP (with its delta) and the dense layer's MLP, on dense inputs."""

    pairs_on_disk = False

    def __init__(self, mlp: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                 val: tuple[torch.Tensor, torch.Tensor], batch_size: int, skip_tokens: int) -> None:
        self.mlp, self.train, self.val = mlp, train, val
        self.batch_size, self.skip = batch_size, skip_tokens
        self.device = next(mlp.parameters()).device
        self.num_train = len(train[0])

    def _loss(self, inputs: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
        outputs = self.mlp(inputs.to(self.device))
        return functional.mse_loss(outputs[:, self.skip :].float(), targets[:, self.skip :].to(self.device).float(),
                                   reduction=reduction)

    def train_loss(self, indices: torch.Tensor) -> torch.Tensor:
        return self._loss(self.train[0][indices], self.train[1][indices], "mean")

    @torch.no_grad()
    def val_loss(self) -> float:
        batches = torch.arange(len(self.val[0])).split(self.batch_size)
        total = sum(self._loss(self.val[0][i], self.val[1][i], "sum").item() for i in batches)
        return total / self.val[1][:, self.skip :].numel()

    def baseline(self) -> float:
        """The recovery starts at zero (B = 0): the baseline is direct sharing."""
        return self.val_loss()


def _check_configs(slw_config: TrainConfig, sft_config: TrainConfig) -> None:
    if slw_config.loss != "mse":
        raise ValueError(f"SHARP's warm-up matches each layer's MLP output with the MSE, but slw_config.loss="
                         f"{slw_config.loss!r}: pass TrainConfig(loss='mse', ...)")
    if sft_config.loss != "lm":
        raise ValueError(f"SHARP's fine-tuning trains on the next-token loss, but sft_config.loss="
                         f"{sft_config.loss!r}: pass TrainConfig(loss='lm', ...)")


@positional_deprecated("rank", "alpha", "slw_sequences", "slw_config", "sft_sequences", "sft_config", "seed", "cache")
def sharp(
    model: PreTrainedModel,
    layers: Sequence[int],
    *,
    rank: int = 8,
    alpha: float = 16.0,
    slw_sequences: torch.Tensor | None = None,
    slw_config: TrainConfig | None = None,
    sft_sequences: torch.Tensor | None = None,
    sft_config: TrainConfig | None = None,
    seed: int = 0,
    cache: bool | str | os.PathLike = False,
) -> SharpResult:
    """A copy of ``model`` whose ``layers`` reuse the MLP weights below them, with rank-``rank`` recovery.

    ``layers`` (0-based; e.g. from :func:`sharing_pattern`) each run the MLP weights of
    their reference (:func:`reference_layers`), plus, when ``rank >= 1``, peft LoRA
    updates (scale ``alpha / rank``, initialised with ``seed``, B = 0) of every linear
    projection of that MLP. With ``slw_sequences`` each layer's updates are warmed up
    alone with ``slw_config`` (``loss="mse"``; default ``TrainConfig()``) against the
    dense layer's MLP output; then, with ``sft_sequences``, all updates together on the
    next-token loss with ``sft_config`` (``loss="lm"``; default ``TrainConfig(loss="lm")``).
    Either stage can be left out. ``rank=0`` is direct sharing and trains nothing.
    ``cache`` (False, True or a folder, as in :mod:`streamline_lib.core.results_cache`) keeps
    the trained recovery parameters on disk, per stage, keyed by everything that decides them.
    """
    layers = sorted(layers)
    references = reference_layers(layers, num_layers(model))
    if rank < 0:
        raise ValueError(f"rank={rank} is invalid: 0 (direct sharing) or a positive rank of the recovery updates")
    slw_config, sft_config = slw_config or TrainConfig(), sft_config or TrainConfig(loss="lm")
    _check_configs(slw_config, sft_config)
    shared = _share(model, layers, references)
    if rank == 0:
        return SharpResult(shared, tuple(layers), tuple(references), 0, 0, (), None)
    prefix = architecture(model).layers
    decoder = get_layers(shared)
    targets = [f"{prefix}.{i}.mlp.{name}" for i in layers
               for name, module in _mlp(decoder[i]).named_modules() if isinstance(module, nn.Linear)]
    shared = inject_lora(shared, rank, alpha, targets, seed).get_base_model()
    decoder = get_layers(shared)
    per_layer = [lora_modules(decoder[i].mlp) for i in layers]
    recovery = nn.ModuleList(per_layer)
    setting = {"layers": layers, "references": references, "rank": rank, "alpha": alpha, "seed": seed}
    slw_results: list[TrainResult] = []
    slw_keys: list[dict[str, Any]] = []
    if slw_sequences is not None:
        pairs: dict[str, Any] = {}
        for index, adapters in zip(layers, per_layer):
            key = training_key("sharp-warmup", model, slw_sequences, slw_config, layer=index, **setting)
            slw_keys.append(key)
            slw_results.append(cached_training(
                cache,
                key=lambda: key,
                train=lambda: _warm_up(model, shared, index, adapters, layers, slw_sequences, slw_config, pairs),
                load=adapters.load_state_dict,
                weights=adapters.state_dict,
            ))
    sft_result = None
    if sft_sequences is not None:
        sft_result = cached_training(
            cache,
            key=lambda: training_key("sharp-finetune", model, sft_sequences, sft_config, **setting, warmup=slw_keys),
            train=lambda: train_adapters(shared, recovery, sft_sequences, sft_config),
            load=recovery.load_state_dict,
            weights=recovery.state_dict,
        )
    for p in shared.parameters():  # peft froze the base weights; give back a model like the one passed in
        p.requires_grad_(True)
    recovery_parameters = sum(p.numel() for p in recovery.parameters())
    return SharpResult(shared, tuple(layers), tuple(references), rank, recovery_parameters, tuple(slw_results),
                       sft_result)


def _warm_up(dense: PreTrainedModel, shared: PreTrainedModel, index: int, adapters: nn.Module,
             layers: Sequence[int], sequences: torch.Tensor, config: TrainConfig, pairs: dict[str, Any]) -> TrainResult:
    """SLW of layer ``index``'s recovery; ``pairs`` keeps the dense MLP pairs of every layer between calls."""
    mlp = get_layers(shared)[index].mlp

    def make_objective(train_seqs: torch.Tensor, val_seqs: torch.Tensor, stack: ExitStack) -> _WarmupObjective:
        if "train" not in pairs:  # every layer gets the same split (same sequences, same seed): one dense pass
            pairs["train"] = _mlp_pairs(dense, layers, train_seqs, config.batch_size, config.progress)
            pairs["val"] = _mlp_pairs(dense, layers, val_seqs, config.batch_size, config.progress)
        return _WarmupObjective(mlp, pairs["train"][index], pairs["val"][index], config.batch_size,
                                config.mse_skip_tokens)

    return train_module(shared, adapters, sequences, config, make_objective, in_float32=False)

