"""Score blocks of consecutive decoder layers: which block changes the hidden state least?

LLM-Streamline removes the block of ``n`` consecutive layers whose input and output
hidden states are most alike; its peers score blocks or layers with other measures.
All of them are computed here from one pass over the calibration text.

**Index convention** (the same as :func:`streamline_lib.architecture.layers.remove_layers`): a block
is given by ``start``, its first layer (0-based), and its length ``n``: it is layers
``start … start+n-1``, its input is ``h_start`` and its output ``h_{start+n}``. ``h_0``
is the embedding output and ``h_i`` the raw output of layer ``i-1``, before the final
norm (see :mod:`streamline_lib.architecture.hidden_states`); ``L`` is the number of layers.

=============  ===========================================================  ==============
metric         score of the block (``start``, ``n``)                        block removed
=============  ===========================================================  ==============
``cosine``     mean over all tokens of cos(h_start, h_start+n)               highest
               (LLM-Streamline)
``angular``    mean over sequences of arccos(cos(h_start, h_start+n))/pi     lowest
               on the last token only (Gromov et al.)
``bi``         sum over the block's layers i of ShortGPT's Block Influence   lowest
               BI_i = 1 - mean_t cos(h_i, h_i+1)
``euclidean``  mean over all tokens of ||h_start - h_start+n||              lowest
``dot``        mean over all tokens of <h_start, h_start+n>                  highest
``ppl``        perplexity on the calibration text without the block          lowest
=============  ===========================================================  ==============

ShortGPT itself removes the ``n`` lowest-BI layers, consecutive or not
(:func:`shortgpt_layers`); the ``bi`` block score is its closest consecutive analogue.
SLEB removes layers one at a time, each the one whose removal raises calibration
perplexity least in the model pruned so far (:func:`sleb_layers`), consecutive or not.

:func:`collect_stats` keeps running sums over batches, never the states of the whole
calibration set (the authors' code keeps them all and builds a tokens x tokens matrix
per sequence to read its diagonal), so memory is bounded by one batch.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.nn import functional

from ..architecture.hidden_states import iter_hidden_states
from ..architecture.layers import check_block, get_layers, layers_owner, num_layers, remove_layer_set
from ..core.progress import progress_bar
from ..core.results_cache import cache_location, fingerprint, load_result, model_fingerprint, store_result
from ..data.text_data import check_token_ids
from ..evaluation.held_out import perplexity

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "METRICS",
    "HIGHER_IS_BETTER",
    "MIN_SEQ_LEN",
    "HiddenStateStats",
    "BlockScores",
    "collect_stats",
    "block_influence",
    "shortgpt_layers",
    "block_scores",
    "score_matrix",
    "layers_removed",
    "block_removed",
    "perplexity_scores",
    "SlebResult",
    "sleb_layers",
    "score_blocks",
]

HIGHER_IS_BETTER: dict[str, bool] = {
    "cosine": True,
    "angular": False,
    "bi": False,
    "euclidean": False,
    "dot": True,
    "ppl": False,
}
"""metric -> whether a higher score marks a better block to remove."""
#: The block-scoring metrics.
METRICS: tuple[str, ...] = tuple(HIGHER_IS_BETTER)
MIN_SEQ_LEN = 2
"""The shortest calibration sequence every metric can score.

``ppl`` needs 2 tokens to predict one. The hidden-state metrics skip no position
(``cosine``, ``euclidean``, ``dot`` and ``bi`` average every token, ``angular`` reads the
last), but in a 1-token sequence the only token is at position 0, which attends to
nothing but itself: its states show how a block maps isolated tokens, not text, and the
last token ``angular`` wants, the one that has read the sequence, is that same token.
"""
_STATS_METRICS: tuple[str, ...] = tuple(m for m in METRICS if m != "ppl")

# Pairwise metrics: the HiddenStateStats field holding the sum, and the count it is averaged over.
_PAIR_SUMS: dict[str, tuple[str, str]] = {
    "cosine": ("cosine_sum", "num_tokens"),
    "euclidean": ("distance_sum", "num_tokens"),
    "dot": ("dot_sum", "num_tokens"),
    "angular": ("last_angular_sum", "num_sequences"),
}


def _check_metric(metric: str, allowed: tuple[str, ...]) -> None:
    if metric not in allowed:
        extra = " (ppl needs the model: use perplexity_scores or score_blocks)" if metric == "ppl" else ""
        raise ValueError(f"unknown metric {metric!r}{extra}; choose one of: {', '.join(allowed)}")


def _check_calibration(model: PreTrainedModel, sequences: torch.Tensor) -> None:
    """Refuse calibration ``sequences`` no metric can score: too short (:data:`MIN_SEQ_LEN`) or out of vocabulary."""
    if sequences.ndim != 2 or len(sequences) == 0 or sequences.shape[1] < MIN_SEQ_LEN:
        raise ValueError(
            f"calibration sequences of shape {tuple(sequences.shape)} cannot be scored: every metric needs shape "
            f"(num_seqs >= 1, seq_len >= {MIN_SEQ_LEN}), as a 1-token sequence predicts nothing and its one token "
            "attends only to itself; use longer windows, e.g. token_sequences(..., seq_len=256)"
        )
    check_token_ids(model, sequences)


def _check_n(n: int, total: int) -> None:
    if not 1 <= n < total:
        raise ValueError(
            f"n={n} is the number of consecutive layers to remove; with {total} layers it must satisfy "
            f"1 <= n <= {total - 1} (at least one layer must remain)"
        )


@dataclass(frozen=True)
class HiddenStateStats:
    """Sums over calibration text of comparisons between every pair of hidden states.

    Each ``*_sum`` pair matrix has shape ``(L+1, L+1)``; entry ``[j, k]`` with ``j < k``
    compares ``h_j`` with ``h_k``, entries on and below the diagonal are zero and unused.
    Sums are float64 on the CPU; each term was computed in float32.
    """

    cosine_sum: torch.Tensor
    """Sum over all tokens of cos(h_j, h_k)."""
    distance_sum: torch.Tensor
    """Sum over all tokens of ||h_j - h_k||."""
    dot_sum: torch.Tensor
    """Sum over all tokens of <h_j, h_k>."""
    last_angular_sum: torch.Tensor
    """Sum over sequences of arccos(cos(h_j, h_k))/pi at the last token."""
    norm_sum: torch.Tensor
    """Shape ``(L+1,)``: sum over all tokens of ||h_i||."""
    num_tokens: int
    num_sequences: int

    @property
    def num_layers(self) -> int:
        """``L``, the number of decoder layers of the model the states came from."""
        return self.norm_sum.numel() - 1

    @property
    def mean_norms(self) -> torch.Tensor:
        """Shape ``(L+1,)``: mean norm of ``h_0 … h_L`` over all tokens (norms grow with depth)."""
        return self.norm_sum / self.num_tokens

    def pair_means(self, metric: str) -> torch.Tensor:
        """``(L+1, L+1)`` matrix of the mean ``metric`` between ``h_j`` and ``h_k`` at ``[j, k]``.

        ``metric`` is one of cosine, euclidean, dot, angular; entries with ``j >= k`` are NaN.
        """
        _check_metric(metric, tuple(_PAIR_SUMS))
        field, count = _PAIR_SUMS[metric]
        means = getattr(self, field) / getattr(self, count)
        upper = torch.ones_like(means, dtype=torch.bool).triu(diagonal=1)
        return means.where(upper, torch.nan)


@torch.inference_mode()
def collect_stats(
    model: PreTrainedModel, sequences: torch.Tensor, batch_size: int = 8, progress: bool = True
) -> HiddenStateStats:
    """Gather :class:`HiddenStateStats` over token ``sequences`` ``(num_seqs, seq_len)``.

    One forward pass per batch; per batch the states are stacked in float32 (whatever the
    model's dtype) and, for each block length ``n``, compared for all starts at once.
    Peak memory is about twice the float32 stack ``(L+1) x batch_size x seq_len x hidden``.
    """
    _check_calibration(model, sequences)
    size = num_layers(model) + 1
    sums = {name: torch.zeros(size, size, dtype=torch.float64) for name in
            ("cosine_sum", "distance_sum", "dot_sum", "last_angular_sum")}
    norm_sum = torch.zeros(size, dtype=torch.float64)
    for states in iter_hidden_states(model, sequences, batch_size, progress=progress, desc="layer statistics"):
        stack = torch.stack(states).float()  # (L+1, batch, seq, hidden)
        last = functional.normalize(stack[:, :, -1], dim=-1)  # (L+1, batch, hidden), unit vectors
        stack = stack.flatten(1, 2)  # (L+1, tokens, hidden)
        norms = torch.linalg.vector_norm(stack, dim=-1)  # (L+1, tokens)
        batch_sums = {name: torch.zeros(size, size, device=stack.device) for name in sums}
        for n in range(1, size):
            starts = torch.arange(size - n, device=stack.device)
            inputs, outputs = stack[:-n], stack[n:]
            dots = torch.einsum("std,std->st", inputs, outputs)  # no (states, tokens, hidden) temporary
            cosines = dots / (norms[:-n].clamp_min(1e-12) * norms[n:].clamp_min(1e-12))
            distances = torch.linalg.vector_norm(inputs - outputs, dim=-1)
            # The angle between unit vectors u, v is 2 atan2(|u - v|, |u + v|): unlike arccos of the
            # cosine it stays accurate near 0, where the redundant blocks are.
            u, v = last[:-n], last[n:]
            angles = 2 * torch.atan2(torch.linalg.vector_norm(u - v, dim=-1), torch.linalg.vector_norm(u + v, dim=-1))
            batch_sums["cosine_sum"][starts, starts + n] = cosines.sum(-1)
            batch_sums["distance_sum"][starts, starts + n] = distances.sum(-1)
            batch_sums["dot_sum"][starts, starts + n] = dots.sum(-1)
            batch_sums["last_angular_sum"][starts, starts + n] = angles.sum(-1) / math.pi
        for name, total in sums.items():
            total += batch_sums[name].to("cpu", torch.float64)
        norm_sum += norms.sum(-1).to("cpu", torch.float64)
    return HiddenStateStats(**sums, norm_sum=norm_sum, num_tokens=sequences.numel(), num_sequences=len(sequences))


def block_influence(stats: HiddenStateStats) -> torch.Tensor:
    """Shape ``(L,)``: ShortGPT's Block Influence ``BI_i = 1 - mean_t cos(h_i, h_i+1)`` of each layer."""
    return 1 - stats.pair_means("cosine").diagonal(offset=1)


def shortgpt_layers(stats: HiddenStateStats, n: int) -> list[int]:
    """The ``n`` layers ShortGPT removes: those of lowest Block Influence, in increasing index order.

    They need not be consecutive. Ties go to the lower layer index.
    """
    _check_n(n, stats.num_layers)
    order = torch.argsort(block_influence(stats), stable=True)
    return sorted(order[:n].tolist())


@dataclass(frozen=True)
class BlockScores:
    """The score of every block of ``n`` consecutive layers under one metric."""

    metric: str
    n: int
    scores: tuple[float, ...]
    """``scores[start]`` for ``start = 0 … L-n``."""
    higher_is_better: bool
    """Whether a higher score marks a better block to remove."""

    @property
    def best_start(self) -> int:
        """The ``start`` of the block to remove; on a tie the lowest start wins, NaN never wins."""
        values = torch.tensor(self.scores, dtype=torch.float64)
        if values.isnan().all():
            raise ValueError(f"every {self.metric} score is NaN, so no block can be chosen: {self.scores}")
        keys = values if self.higher_is_better else -values
        return int(keys.nan_to_num(nan=-math.inf).argmax())  # argmax returns the first maximum


def block_scores(stats: HiddenStateStats, metric: str, n: int) -> BlockScores:
    """Score every block of ``n`` layers under a hidden-state ``metric`` (all but ``ppl``).

    For ``bi`` the block's score is the sum of its layers' Block Influence.
    """
    _check_metric(metric, _STATS_METRICS)
    _check_n(n, stats.num_layers)
    starts = torch.arange(stats.num_layers - n + 1)
    if metric == "bi":
        per_layer = block_influence(stats)
        scores = torch.stack([per_layer[start : start + n].sum() for start in starts])
    else:
        scores = stats.pair_means(metric)[starts, starts + n]
    return BlockScores(metric, n, tuple(scores.tolist()), HIGHER_IS_BETTER[metric])


def score_matrix(stats: HiddenStateStats, metric: str) -> torch.Tensor:
    """``(L-1, L)`` table for heatmaps: row ``n-1``, column ``start`` holds the block's score.

    Covers ``n = 1 … L-1`` and every metric but ``ppl``; NaN where ``start + n > L``.
    """
    total = stats.num_layers
    matrix = torch.full((total - 1, total), torch.nan, dtype=torch.float64)
    for n in range(1, total):
        matrix[n - 1, : total - n + 1] = torch.tensor(block_scores(stats, metric, n).scores, dtype=torch.float64)
    return matrix


@contextmanager
def layers_removed(model: PreTrainedModel, layers: Iterable[int]) -> Iterator[PreTrainedModel]:
    """Within the block, ``model`` has the layers at indices ``layers`` removed, in place.

    On exit, even after an exception, the model is restored exactly: the same layer list
    object, ``num_hidden_layers``, ``layer_types``, every ``layer_idx`` and qwen2's
    ``has_sliding_layers``. Nothing is copied, so this suits 7B models.
    """
    owner, name = layers_owner(model)
    original_layers = get_layers(model)
    config = model.config
    num_hidden_layers = config.num_hidden_layers
    layer_types = getattr(config, "layer_types", None)
    layer_indices = [(module, module.layer_idx) for module in original_layers.modules() if hasattr(module, "layer_idx")]
    has_sliding = getattr(owner, "has_sliding_layers", None)
    try:
        yield remove_layer_set(model, layers)
    finally:
        setattr(owner, name, original_layers)
        config.num_hidden_layers = num_hidden_layers
        if layer_types is not None:
            config.layer_types = layer_types
        for module, index in layer_indices:
            module.layer_idx = index
        if has_sliding is not None:
            owner.has_sliding_layers = has_sliding


def block_removed(model: PreTrainedModel, start: int, n: int) -> AbstractContextManager[PreTrainedModel]:
    """Within the block, ``model`` has layers ``start … start+n-1`` removed (:func:`layers_removed`)."""
    check_block(model, start, n, removing=True)
    return layers_removed(model, range(start, start + n))


def perplexity_scores(
    model: PreTrainedModel, sequences: torch.Tensor, n: int, batch_size: int = 8, progress: bool = True
) -> BlockScores:
    """The ``ppl`` metric: perplexity on ``sequences`` with each block of ``n`` layers removed.

    One full evaluation per start (``L-n+1`` of them); the model is restored after each.
    """
    total = num_layers(model)
    _check_n(n, total)
    _check_calibration(model, sequences)
    scores = []
    for start in progress_bar(range(total - n + 1), f"perplexity without {n} layers", enabled=progress):
        with block_removed(model, start, n):
            scores.append(perplexity(model, sequences, batch_size, progress=False))
    return BlockScores("ppl", n, tuple(scores), HIGHER_IS_BETTER["ppl"])


@dataclass(frozen=True)
class SlebResult:
    """SLEB's greedy choice: the layers removed, round by round."""

    layers: tuple[int, ...]
    """Original 0-based indices of the removed layers, in the order they were removed."""
    perplexities: tuple[float, ...]
    """Calibration perplexity of the model after each round."""

    def first(self, n: int) -> list[int]:
        """The layers SLEB removes for ``n`` layers, in increasing index order.

        Greedy rounds never look ahead, so the choice for ``n`` is the first ``n`` rounds
        of any longer run on the same text.
        """
        if not 1 <= n <= len(self.layers):
            raise ValueError(f"n={n}: this run removed {len(self.layers)} layers; ask for 1 .. {len(self.layers)}")
        return sorted(self.layers[:n])


def sleb_layers(
    model: PreTrainedModel, sequences: torch.Tensor, n: int, batch_size: int = 8, progress: bool = True,
    cache: bool | str | os.PathLike = False,
) -> SlebResult:
    """SLEB (Song et al., 2024): remove ``n`` layers one at a time, each the one whose removal hurts least.

    Every round tries removing each remaining layer but the first and the last (SLEB's
    reference implementation never removes those two, so ``n <= L - 2``) from the model
    pruned so far and keeps the removal with the lowest perplexity on the calibration
    ``sequences``; ties go to the lower index. That is about ``(L-2) + (L-3) + ... + (L-n-1)``
    perplexity evaluations, so
    calibration text costs far more here than for the one-pass metrics. The model is
    restored after every evaluation and is unchanged on return. ``cache`` (False, True or
    a folder, as in :mod:`streamline_lib.core.results_cache`) keeps the result on disk,
    keyed by the model's weights, the tokens, ``n`` and ``batch_size``.
    """
    total = num_layers(model)
    if not 1 <= n <= total - 2:
        raise ValueError(f"n={n}: SLEB never removes the first or the last layer, so with {total} layers it can "
                         f"remove 1 to {total - 2}")
    _check_calibration(model, sequences)
    folder = cache_location(cache)
    if folder is not None:
        key = {"kind": "sleb", "model": model_fingerprint(model), "tokens": fingerprint(sequences.tolist()),
               "n": n, "batch_size": batch_size, "keeps": "first and last layer"}
        cached = load_result(folder, key, lambda data: SlebResult(tuple(data["layers"]), tuple(data["perplexities"])))
        if cached is not None:
            return cached
    removed: list[int] = []
    perplexities: list[float] = []
    for _ in progress_bar(range(n), "SLEB rounds", enabled=progress):
        trials = {}
        for candidate in (i for i in range(1, total - 1) if i not in removed):  # first and last stay
            with layers_removed(model, [*removed, candidate]):
                trials[candidate] = perplexity(model, sequences, batch_size, progress=False)
        best = min(trials, key=lambda i: (trials[i], i))
        removed.append(best)
        perplexities.append(trials[best])
    result = SlebResult(tuple(removed), tuple(perplexities))
    if folder is not None:
        store_result(folder, key, dataclasses.asdict(result))
    return result


def score_blocks(
    model: PreTrainedModel,
    sequences: torch.Tensor,
    n: int,
    metric: str = "cosine",
    batch_size: int = 8,
    progress: bool = True,
) -> BlockScores:
    """Score every block of ``n`` layers of ``model`` on calibration ``sequences``; ``.best_start`` picks one.

    To compare several ``n`` or metrics, call :func:`collect_stats` once and then
    :func:`block_scores`, rather than this, which runs the model every time.
    """
    _check_metric(metric, METRICS)
    _check_n(n, num_layers(model))
    if metric == "ppl":
        return perplexity_scores(model, sequences, n, batch_size, progress)
    return block_scores(collect_stats(model, sequences, batch_size, progress), metric, n)
