"""How far a pruned model is from the dense one: KL divergence on held-out text, and answer flips.

Pruned copies of a small model answer the zero-shot tasks near chance, so accuracy rarely
tells two of them apart. Two measures compare a pruned model with the dense one directly:

* **KL divergence from the dense model** (:func:`distance_from_dense`), as llama.cpp's
  perplexity tool reports it for quantised models: at every predicted position of held-out
  token windows, ``KL(p_dense(.|<t) || p_pruned(.|<t))`` in nats, with the median, the 99th
  percentile and how often both models' most likely next token agree. The tokens of one
  window are not independent, so intervals come from a bootstrap over whole windows;
  :func:`paired_distance_difference` compares two pruned models measured on the same windows.
* **Flips** (:func:`flips`; Dutta et al. 2024, "Accuracy is not all you need"): the share of
  zero-shot items whose answer changed against the dense model's, which counts the changes
  that cancel out in accuracy, and separately the right-to-wrong and wrong-to-right shares.

Intervals are percentile bootstrap intervals from :func:`streamline_lib.evaluation.statistics.mean_interval`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas
import torch
from torch import nn

from ..core import results_cache
from ..core.progress import progress_bar
from .held_out import check_windows
from .statistics import RESAMPLES, Interval, mean_interval
from .zero_shot import Metric, ZeroShotResult, check_comparable, check_metric

__all__ = ["Distance", "distance_from_dense", "paired_distance_difference", "Flips", "flips", "flips_by_task",
           "distance_table"]

DISTANCE_VERSION = 1  # bump when a change to this module changes a stored distance


@dataclass(frozen=True)
class Distance:
    """A model's next-token distributions against the dense model's on held-out windows (KL in nats)."""

    mean_kl: Interval  # mean over predicted tokens; the interval resamples whole windows
    median_kl: float  # over predicted tokens
    p99_kl: float  # the 99th percentile over predicted tokens
    same_top: Interval  # share of predicted tokens where both models' most likely next token is the same
    tokens: int  # predicted tokens: (seq_len - 1) per window
    sequences: int  # windows
    sequence_kl: tuple[float, ...]  # per window, the sum of its tokens' KL (what paired differences resample)
    windows: str  # a fingerprint of the windows' token ids: paired differences need equal ones


@torch.inference_mode()
def distance_from_dense(dense: nn.Module, pruned: nn.Module, sequences: torch.Tensor, batch_size: int = 8,
                        progress: bool = True, resamples: int = RESAMPLES, seed: int = 0,
                        cache: bool | str | os.PathLike = False) -> Distance:
    """KL divergence of ``pruned``'s next-token distributions from ``dense``'s on windows ``(num_seqs, seq_len)``.

    Every window is scored on its own, as by :func:`~streamline_lib.evaluation.held_out.perplexity`.
    Both models run ``batch_size`` windows at a time and the KL is computed one window at a
    time (float32 log-softmax, summed over the vocabulary in float64), so memory holds one
    batch's logits, never the whole set's. Intervals are bootstrap intervals over windows.
    ``cache`` (False, True or a folder, as in :mod:`streamline_lib.core.results_cache`) keeps
    the result under a key of both models' fingerprints, the windows and the bootstrap's
    settings.
    """
    for model in (dense, pruned):
        check_windows(model, sequences)
    folder = results_cache.cache_location(cache)
    key = None
    if folder is not None:
        key = {"kind": "distance_from_dense", "version": DISTANCE_VERSION,
               "dense": results_cache.model_fingerprint(dense), "pruned": results_cache.model_fingerprint(pruned),
               "windows": _windows_fingerprint(sequences), "resamples": resamples, "seed": seed}
        cached = results_cache.load_result(folder, key, _distance_from_json)
        if cached is not None:
            return cached
    distance = _measure(dense, pruned, sequences, batch_size, progress, resamples, seed)
    if key is not None:
        results_cache.store_result(folder, key, dataclasses.asdict(distance))
    return distance


def _distance_from_json(data: dict) -> Distance:
    intervals = {name: Interval(**data[name]) for name in ("mean_kl", "same_top")}
    return Distance(**{**data, **intervals, "sequence_kl": tuple(data["sequence_kl"])})


def _measure(dense: nn.Module, pruned: nn.Module, sequences: torch.Tensor, batch_size: int, progress: bool,
             resamples: int, seed: int) -> Distance:
    """:func:`distance_from_dense` without the cache."""
    kl, same_top = [], []
    for batch in progress_bar(sequences.split(batch_size), "KL from dense", enabled=progress):
        batch_kl, batch_same_top = _batch_distance(dense, pruned, batch)
        kl.append(batch_kl)
        same_top.append(batch_same_top)
    token_kl = torch.cat(kl).numpy()  # (num_seqs, seq_len - 1), float64
    token_same_top = torch.cat(same_top).numpy()
    return Distance(
        mean_kl=mean_interval(token_kl.mean(axis=1), resamples, seed),  # windows of equal length: the token mean
        median_kl=float(np.median(token_kl)),
        p99_kl=float(np.quantile(token_kl, 0.99)),
        same_top=mean_interval(token_same_top.mean(axis=1), resamples, seed),
        tokens=token_kl.size,
        sequences=len(token_kl),
        sequence_kl=tuple(token_kl.sum(axis=1).tolist()),
        windows=_windows_fingerprint(sequences),
    )


def _batch_distance(dense: nn.Module, pruned: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per predicted position of a batch of windows, the KL (float64) and whether the top tokens agree."""
    dense_logits = _next_token_logits(dense, batch)
    pruned_logits = _next_token_logits(pruned, batch).to(dense_logits.device)
    kl = torch.stack([_kl(d, p) for d, p in zip(dense_logits, pruned_logits)])
    same_top = dense_logits.argmax(-1) == pruned_logits.argmax(-1)
    return kl.cpu(), same_top.cpu()


def _next_token_logits(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The logits that predict tokens 1 .. seq_len - 1 of each window: ``(rows, seq_len - 1, vocab)``."""
    return model(input_ids=batch.to(next(model.parameters()).device), use_cache=False).logits[:, :-1]


def _kl(dense_logits: torch.Tensor, pruned_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p_dense || p_pruned)`` at each position of one window: ``(positions, vocab) -> (positions,)``."""
    dense_logprobs = dense_logits.float().log_softmax(-1)
    pruned_logprobs = pruned_logits.float().log_softmax(-1)
    pointwise = nn.functional.kl_div(pruned_logprobs, dense_logprobs, reduction="none", log_target=True)
    return pointwise.sum(-1, dtype=torch.float64)


def _windows_fingerprint(sequences: torch.Tensor) -> str:
    """A hash of the windows' shape and token ids."""
    digest = hashlib.blake2b(str(tuple(sequences.shape)).encode(), digest_size=16)
    digest.update(sequences.to(device="cpu", dtype=torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def paired_distance_difference(a: Distance, b: Distance, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """Mean KL of ``a`` minus that of ``b``, two models measured on the same windows, paired by window.

    The bootstrap resamples windows, the same draw for both, so the windows' own difficulty
    leaves the noise; an interval that contains 0 is a tie.
    """
    if a.windows != b.windows:
        raise ValueError("the two distances were measured on different token windows; measure both on the same ones")
    tokens_per_window = a.tokens / a.sequences
    difference = (np.array(a.sequence_kl) - np.array(b.sequence_kl)) / tokens_per_window
    return mean_interval(difference, resamples, seed)


@dataclass(frozen=True)
class Flips:
    """How many of the dense model's zero-shot answers a pruned model changed, over the same items."""

    items: int
    metric: Metric  # whose answers: ``acc`` (highest log-likelihood) or ``acc_norm`` (per character)
    changed: int  # items whose answer (the chosen option) differs from the dense model's
    right_to_wrong: int  # items the dense model answers right and the pruned one wrong
    wrong_to_right: int  # items the dense model answers wrong and the pruned one right
    changed_share: Interval  # shares of the items, with bootstrap intervals over items
    right_to_wrong_share: Interval
    wrong_to_right_share: Interval


def flips(pruned: ZeroShotResult, dense: ZeroShotResult, metric: Metric = "acc", resamples: int = RESAMPLES,
          seed: int = 0) -> Flips:
    """The answers ``pruned`` changed against ``dense`` on the same items, all tasks pooled.

    An answer changes between two wrong options too, so ``changed`` can exceed
    ``right_to_wrong + wrong_to_right``. The intervals resample items.
    """
    check_metric(metric)
    check_comparable(pruned, dense)
    pairs = list(zip(pruned.items, dense.items))
    changed = np.array([p.answer(metric) != d.answer(metric) for p, d in pairs], dtype=float)
    right_to_wrong = np.array([d.is_correct(metric) and not p.is_correct(metric) for p, d in pairs], dtype=float)
    wrong_to_right = np.array([p.is_correct(metric) and not d.is_correct(metric) for p, d in pairs], dtype=float)
    return Flips(
        items=len(pairs),
        metric=metric,
        changed=int(changed.sum()),
        right_to_wrong=int(right_to_wrong.sum()),
        wrong_to_right=int(wrong_to_right.sum()),
        changed_share=mean_interval(changed, resamples, seed),
        right_to_wrong_share=mean_interval(right_to_wrong, resamples, seed),
        wrong_to_right_share=mean_interval(wrong_to_right, resamples, seed),
    )


def flips_by_task(pruned: ZeroShotResult, dense: ZeroShotResult, metric: Metric = "acc",
                  resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Flips]:
    """:func:`flips` on each task alone, by task name."""
    check_comparable(pruned, dense)
    return {name: flips(pruned.subset([name]), dense.subset([name]), metric, resamples, seed) for name in dense.tasks}


def distance_table(distances: Mapping[str, Distance], flipped: Mapping[str, Flips] | None = None) -> pandas.DataFrame:
    """One row per named model: its KL from the dense model and, when given, its flips, intervals as text.

    The columns a chapter shows beside accuracy: mean KL [95%], median and 99th percentile,
    the same-top-token rate [95%], then the share of changed answers, right-to-wrong and
    wrong-to-right [95%] and the item count. ``flipped`` may name fewer models than
    ``distances`` (those rows leave the flip columns empty).
    """
    flipped = flipped or {}
    rows = {}
    for name, d in distances.items():
        row = {"mean KL (nats) [95%]": f"{d.mean_kl:.3f}",
               "median KL": round(d.median_kl, 3), "p99 KL": round(d.p99_kl, 2),
               "same top token [95%]": f"{d.same_top:.3f}", "tokens": d.tokens}
        if name in flipped:
            f = flipped[name]
            row.update({"answers changed [95%]": f"{f.changed_share:.3f}",
                        "right to wrong [95%]": f"{f.right_to_wrong_share:.3f}",
                        "wrong to right [95%]": f"{f.wrong_to_right_share:.3f}", "items": f.items})
        rows[name] = row
    return pandas.DataFrame.from_dict(rows, orient="index")
