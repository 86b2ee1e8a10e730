"""Prune a model: remove a block of layers, put a replacement in its place, train it.

:func:`prune` is LLM-Streamline's one-shot pruning of a chosen block (choose it with
:func:`streamline_lib.methods.scoring.score_blocks`); :func:`prune_iterative` is the paper's
iterative ablation, one layer per round, each chosen on the model pruned so far.

Training is the slow step, so :func:`prune` can keep trained replacements on disk
(``cache=True``): keyed by a fingerprint of the dense model, the block, the replacement,
the training tokens and every training setting, so a notebook re-run or a later chapter
gets the same replacement back in a second, and anything that changes it trains anew.

Index convention (as in :mod:`streamline_lib.architecture.layers`): the block is layers
``start .. start+n-1``. With ``replacement="layer"`` one decoder layer comes back in
their place, so ``n - 1`` layers are removed net. :func:`prune_to_sparsity` sizes the
block from a sparsity net of the replacement instead, as the authors' code does (it
replaces ``n + 1`` layers by one to remove ``n`` net), so that a replacement and plain
removal at one sparsity remove the same parameters.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..architecture.layers import (
    check_block,
    check_layer_set,
    get_layers,
    num_layers,
    remove_layer_set,
    remove_layers,
    replace_block,
)
from ..core.deprecation import positional_deprecated
from .linear_replacement import LINEAR_LOSSES, CosineConfig, LinearFit, fit_linear_map, fold_linear_map
from .replacement import NO_MODULE, REPLACEMENTS, check_replacement, layers_to_replace, make_replacement
from .scoring import HiddenStateStats, block_scores, score_blocks
from .trained_cache import cached_training, training_key
from .training import TrainConfig, TrainResult, train_replacement

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["PruneResult", "LayerSetPruneResult", "PerLayerPruneResult", "IterativePruneResult", "prune",
           "prune_to_sparsity", "prune_layers", "prune_per_layer", "prune_iterative"]


@dataclass(frozen=True)
class PruneResult:
    """A pruned model and how it was made."""

    model: PreTrainedModel  # a new model; the dense one is unchanged
    start: int  # first removed layer (0-based)
    n: int  # number of layers removed (replaced by one module unless replacement is "none")
    replacement: str  # one of REPLACEMENTS
    train_result: TrainResult | None  # None when the replacement was not trained
    linear_fit: LinearFit | None = None  # replacement "linear": how well its map fits the calibration tokens

    @property
    def replacement_parameters(self) -> int:
        """Parameters of the replacement module (0 for plain removal and the folded linear map)."""
        if self.replacement in NO_MODULE:
            return 0
        return sum(p.numel() for p in get_layers(self.model)[self.start].parameters())

    @property
    def removed_layers(self) -> tuple[int, ...]:
        """The original 0-based indices of the block's layers."""
        return tuple(range(self.start, self.start + self.n))


@positional_deprecated("replacement", "train_sequences", "train_config", "cache")
def prune(
    model: PreTrainedModel,
    start: int,
    n: int,
    *,
    replacement: str = "none",
    train_sequences: torch.Tensor | None = None,
    train_config: TrainConfig | None = None,
    cache: bool | str | os.PathLike = False,
    linear_loss: str = "lstsq",
) -> PruneResult:
    """A copy of ``model`` with layers ``start`` to ``start+n-1`` replaced by a ``replacement``.

    ``replacement`` is one of :data:`streamline_lib.methods.replacement.REPLACEMENTS`. With
    ``train_sequences`` (tokens from the ``train`` split) the replacement is trained by
    :func:`streamline_lib.methods.training.train_replacement` with ``train_config`` (default
    :class:`~streamline_lib.methods.training.TrainConfig`, whose ``seed`` also initialises the replacement), against
    ``model``'s own hidden states for ``loss="mse"``; otherwise it is left untrained.
    ``"none"`` has nothing to train and ignores ``train_sequences``. ``"linear"`` trains
    nothing either: it fits ReplaceMe's map on ``train_sequences`` (leaving out
    ``train_config.mse_skip_tokens`` positions, like the MSE), folds it into layer
    ``start - 1`` and removes the block; without sequences the map is the identity, i.e.
    plain removal. ``linear_loss`` (one of
    :data:`~streamline_lib.methods.linear_replacement.LINEAR_LOSSES`) chooses the fit:
    ``"lstsq"``, least squares in closed form (the reference's default), or ``"cosine"``, the
    cosine distance minimised with Adam as the reference does
    (:class:`~streamline_lib.methods.linear_replacement.CosineConfig`, shuffled with
    ``train_config.seed``). The fit is one forward pass (and, for ``"cosine"``, Adam steps
    over the stored activations), so it is not cached.

    ``model`` is not changed: the result holds a deep copy, so both are in memory.

    ``cache`` (False, True or a folder, as in :mod:`streamline_lib.core.results_cache`) keeps
    a trained replacement's weights and training record and reuses them when everything
    that decides them is the same (see the module docstring); False always trains.
    """
    config = train_config or TrainConfig()
    if linear_loss not in LINEAR_LOSSES:
        raise ValueError(f"linear_loss={linear_loss!r}: choose one of {', '.join(map(repr, LINEAR_LOSSES))}")
    if linear_loss != "lstsq" and replacement != "linear":
        raise ValueError(f"linear_loss={linear_loss!r} chooses how ReplaceMe's map is fitted, but "
                         f"replacement={replacement!r} has none: use replacement='linear' or drop linear_loss")
    module = make_replacement(model, start, n, replacement, seed=config.seed)  # validates start, n, replacement
    pruned = copy.deepcopy(model)
    if replacement == "linear":
        fit = None
        if train_sequences is not None:
            cosine = CosineConfig(seed=config.seed) if linear_loss == "cosine" else None
            t, fit = fit_linear_map(model, start, n, train_sequences, skip_tokens=config.mse_skip_tokens,
                                    batch_size=config.batch_size, progress=config.progress, loss=linear_loss,
                                    cosine=cosine)
            fold_linear_map(pruned, start - 1, t)
        return PruneResult(remove_layers(pruned, start, n), start, n, replacement, None, fit)
    if module is None:
        return PruneResult(remove_layers(pruned, start, n), start, n, replacement, None)
    replace_block(pruned, start, n, module)
    trained = None
    if train_sequences is not None:
        trained = cached_training(
            cache,
            key=lambda: training_key("trained-replacement", model, train_sequences, config, start=start, n=n,
                                     replacement=replacement),
            train=lambda: train_replacement(pruned, start, train_sequences, config, dense=model),
            load=module.load_state_dict,
            weights=module.state_dict,
        )
    return PruneResult(pruned, start, n, replacement, trained)


def prune_to_sparsity(
    model: PreTrainedModel,
    stats: HiddenStateStats,
    sparsity: float,
    *,
    replacement: str = "none",
    count: str = "total",
    metric: str = "cosine",
    train_sequences: torch.Tensor | None = None,
    train_config: TrainConfig | None = None,
    cache: bool | str | os.PathLike = False,
) -> PruneResult:
    """:func:`prune` of the most redundant block that removes ``sparsity`` of the parameters, net.

    The block has :func:`~streamline_lib.methods.replacement.layers_to_replace` layers (one
    more for a ``layer`` replacement than for plain removal) and is the best one under the
    hidden-state ``metric`` of ``stats`` (:func:`~streamline_lib.methods.scoring.collect_stats`
    on calibration text; one pass serves every block size). ``count`` says what
    ``sparsity`` is a fraction of (``"total"`` or ``"layers"``); the rest is :func:`prune`'s.
    """
    n = layers_to_replace(model, sparsity, replacement, count)
    start = block_scores(stats, metric, n).best_start
    return prune(model, start, n, replacement=replacement, train_sequences=train_sequences,
                 train_config=train_config, cache=cache)


@dataclass(frozen=True)
class LayerSetPruneResult:
    """A model with some layers removed, consecutive or not (ShortGPT, SLEB), and nothing in their place."""

    model: PreTrainedModel  # a new model; the dense one is unchanged
    removed_layers: tuple[int, ...]  # original 0-based indices, increasing
    replacement: str = "none"
    train_result: None = None
    linear_fit: None = None
    replacement_parameters: int = 0

    @property
    def n(self) -> int:
        """The number of layers removed."""
        return len(self.removed_layers)

    @property
    def start(self) -> int | None:
        """The first removed layer when the removed layers are one block, else None."""
        first = self.removed_layers[0]
        return first if self.removed_layers == tuple(range(first, first + self.n)) else None


def prune_layers(model: PreTrainedModel, layers: Sequence[int]) -> LayerSetPruneResult:
    """A copy of ``model`` without the layers at the 0-based indices ``layers``, consecutive or not.

    How ShortGPT (:func:`streamline_lib.methods.scoring.shortgpt_layers`) and SLEB
    (:func:`streamline_lib.methods.scoring.sleb_layers`) prune: nothing stands in for the
    layers, so the result is a plain model of the same architecture.
    """
    indices = check_layer_set(model, layers)  # before the copy
    return LayerSetPruneResult(remove_layer_set(copy.deepcopy(model), indices), tuple(indices))


@dataclass(frozen=True)
class PerLayerPruneResult:
    """A model whose block has one trained module per removed layer, and how each was trained."""

    model: PreTrainedModel  # a new model with as many layers as the dense one
    start: int
    n: int
    replacement: str
    train_results: tuple[TrainResult | None, ...]  # per layer of the block

    @property
    def replacement_parameters(self) -> int:
        """Parameters of the ``n`` modules together."""
        return sum(p.numel() for layer in get_layers(self.model)[self.start : self.start + self.n]
                   for p in layer.parameters())


@positional_deprecated("replacement", "train_sequences", "train_config", "cache")
def prune_per_layer(
    model: PreTrainedModel,
    start: int,
    n: int,
    *,
    replacement: str,
    train_sequences: torch.Tensor | None = None,
    train_config: TrainConfig | None = None,
    cache: bool | str | os.PathLike = False,
) -> PerLayerPruneResult:
    """Replace every layer of ``start .. start+n-1`` by its own ``replacement`` module.

    The alternative to one network for the whole block that the paper's authors were
    asked about (claim C10): module ``i`` is trained by :func:`prune` on dense layer
    ``i``'s own input and output, so training costs ``n`` dense passes and ``n`` fits,
    and ``n`` modules stay in the model. ``replacement="layer"`` is refused (a copy of a
    layer reproduces it: nothing would be pruned), and so is ``"none"`` (that is
    :func:`prune` of the block). ``cache`` as in :func:`prune`, per module.
    """
    check_replacement(replacement)
    if replacement == "layer" or replacement in NO_MODULE:
        raise ValueError(
            f"replacement={replacement!r} cannot be used per layer: 'layer' would copy each layer back and "
            "prune nothing, and 'none' and 'linear' remove the layers, so they are prune() of the block; use "
            f"{', '.join(r for r in REPLACEMENTS if r != 'layer' and r not in NO_MODULE)}"
        )
    check_block(model, start, n, removing=False)  # the whole block, before any training
    pruned = copy.deepcopy(model)
    train_results = []
    for i in range(start, start + n):
        single = prune(model, i, 1, replacement=replacement, train_sequences=train_sequences,
                       train_config=train_config, cache=cache)
        replace_block(pruned, i, 1, get_layers(single.model)[i])
        train_results.append(single.train_result)
        del single
    return PerLayerPruneResult(pruned, start, n, replacement, tuple(train_results))


@dataclass(frozen=True)
class IterativePruneResult:
    """The model after ``n`` rounds of one-layer pruning, and what each round did."""

    model: PreTrainedModel
    replacement: str
    starts: tuple[int, ...]  # per round, the position pruned in the model of that round
    removed: tuple[int, ...]  # per round, the ORIGINAL index of the layer pruned
    layer_map: tuple[int | None, ...]  # per layer of the final model: its original index, None for a replacement
    train_results: tuple[TrainResult | None, ...]  # per round


@positional_deprecated("replacement", "calibration_sequences", "train_sequences", "train_config", "metric")
def prune_iterative(
    model: PreTrainedModel,
    n: int,
    *,
    replacement: str,
    calibration_sequences: torch.Tensor,
    train_sequences: torch.Tensor | None = None,
    train_config: TrainConfig | None = None,
    metric: str = "cosine",
) -> IterativePruneResult:
    """Prune ``n`` layers one at a time, rescoring the current model every round.

    Each round scores single layers of the CURRENT model on ``calibration_sequences``
    (:func:`streamline_lib.methods.scoring.score_blocks` with ``n=1`` and ``metric``), then
    :func:`prune` removes the best one and puts a replacement in its place, trained on
    ``train_sequences`` when given: so round ``k`` trains against the hidden states of
    the round ``k-1`` model, not the original's. Only original decoder layers are
    candidates (replacing a replacement removes nothing), and, for the FFN replacements
    and the linear map, not position 0 (see :func:`streamline_lib.methods.replacement.make_replacement`).
    With ``"linear"`` each round folds a map fitted on the current model into the layer
    before the removed one.

    ``replacement="layer"`` is refused: a copy of the one layer it replaces already
    maps its input to its output exactly, so a round would change nothing. ``model``
    is not changed.
    """
    check_replacement(replacement)
    if replacement == "layer":
        raise ValueError(
            "replacement='layer' cannot be used iteratively: each round replaces ONE layer, and a copy of that "
            f"layer already reproduces it, so nothing would be pruned; use one of "
            f"{', '.join(r for r in REPLACEMENTS if r != 'layer')}, or prune() a block at once"
        )
    total = num_layers(model)
    if not 1 <= n <= total - 1:
        raise ValueError(f"n={n} rounds cannot prune a model with {total} layers; use 1 <= n <= {total - 1}")
    config = train_config or TrainConfig()
    current = model
    layer_map: list[int | None] = list(range(total))
    starts, removed, train_results = [], [], []
    for _ in range(n):
        scores = score_blocks(current, calibration_sequences, n=1, metric=metric, progress=config.progress)
        candidates = [
            score if layer_map[i] is not None and (replacement == "none" or i > 0) else math.nan
            for i, score in enumerate(scores.scores)
        ]
        start = dataclasses.replace(scores, scores=tuple(candidates)).best_start
        result = prune(current, start, 1, replacement=replacement, train_sequences=train_sequences, train_config=config)
        starts.append(start)
        removed.append(layer_map[start])
        train_results.append(result.train_result)
        if replacement in NO_MODULE:  # the layer is gone, no module took its place
            del layer_map[start]
        else:
            layer_map[start] = None
        current = result.model
    return IterativePruneResult(current, replacement, tuple(starts), tuple(removed), tuple(layer_map),
                                tuple(train_results))
