"""LLM-Streamline's stability metric: does the pruned model agree with the dense one?

Accuracy can rise after pruning by luck: the pruned model guesses right where the
dense one was unsure. Stability counts agreement instead, weighted towards items
on which the dense model was decisive. On a multiple-choice task whose options are
scored by perplexity:

* ``sigma_i``: the standard deviation of the DENSE model's per-option perplexities
  on item ``i`` (a large spread = a decisive dense model). Population standard
  deviation (``ddof=0``), as ``numpy.std`` computes by default and the authors'
  script uses; it is the spread of the options actually there, not an estimate
  of a larger population's;
* ``w = softmax(sigma)`` over the items;
* ``stability = sum_i w_i * [pruned correct on i == dense correct on i]``.

Identical models score 1; flipping every item's correctness scores 0. Because the
weights are a softmax of raw perplexity spreads, a few items with huge spreads can
carry almost all the weight (plot :func:`stability_weights`); the softmax subtracts
the largest spread first, so huge spreads do not overflow.

The authors' public script has a bug, reproduced by
:func:`stability_authors_published` to show its effect: it counts the matching
items ``m`` and returns the sum of the FIRST ``m`` weights in item order, not the
weights of the matching items.

Pass the items of one task (the weights compare perplexity spreads, which live on
different scales in different tasks), for example ``dense.tasks["piqa"].items``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .zero_shot import ItemResult, Metric

__all__ = ["stability_weights", "stability", "stability_authors_published"]


def stability_weights(dense_items: Sequence[ItemResult]) -> np.ndarray:
    """The softmax over items of the dense model's per-item perplexity spread (sums to 1)."""
    if not dense_items:
        raise ValueError("stability needs at least one item")
    spreads = np.array([np.std(item.perplexities) for item in dense_items], dtype=np.float64)
    exps = np.exp(spreads - spreads.max())
    return exps / exps.sum()


def _agreement(dense_items: Sequence[ItemResult], pruned_items: Sequence[ItemResult],
               metric: Metric) -> np.ndarray:
    """1 where the pruned model is right exactly where the dense one is, after checking the items match."""
    if len(dense_items) != len(pruned_items):
        raise ValueError(f"{len(dense_items)} dense items but {len(pruned_items)} pruned items; evaluate "
                         "both models on the same tasks with the same limit and seed")
    for position, (dense, pruned) in enumerate(zip(dense_items, pruned_items)):
        if (dense.task, dense.index, dense.gold, len(dense.logliks)) != \
                (pruned.task, pruned.index, pruned.gold, len(pruned.logliks)):
            raise ValueError(f"item {position} differs: dense {dense.task}[{dense.index}] vs pruned "
                             f"{pruned.task}[{pruned.index}] (or their gold answers or option counts); "
                             "pass the same items in the same order for both models")
    return np.array([dense.is_correct(metric) == pruned.is_correct(metric)
                     for dense, pruned in zip(dense_items, pruned_items)], dtype=np.float64)


def stability(dense_items: Sequence[ItemResult], pruned_items: Sequence[ItemResult],
              metric: Metric = "acc") -> float:
    """The stability of the pruned model relative to the dense one, in [0, 1] (the paper's definition).

    ``metric`` says which answer counts as "correct": ``"acc"`` (highest
    log-likelihood, the default) or ``"acc_norm"``.
    """
    agree = _agreement(dense_items, pruned_items, metric)
    return float(stability_weights(dense_items) @ agree)


def stability_authors_published(dense_items: Sequence[ItemResult], pruned_items: Sequence[ItemResult],
                                metric: Metric = "acc") -> float:
    """What the authors' public script computes (a bug): the sum of the first ``m`` weights in
    item order, where ``m`` is the number of items on which the two models agree."""
    matches = int(_agreement(dense_items, pruned_items, metric).sum())
    return float(stability_weights(dense_items)[:matches].sum())
