"""LLM-Streamline's stability metric: does the pruned model agree with the dense one?

Accuracy can rise after pruning by luck: the pruned model guesses right where the
dense one was unsure. Stability counts agreement instead, weighted towards items
on which the dense model was decisive. On a multiple-choice task:

* ``sigma_i``: the spread of the DENSE model's per-option scores on item ``i`` (a
  large spread = a decisive dense model): their population standard deviation
  (``ddof=0``), as ``numpy.std`` computes by default and the authors' script uses;
  it is the spread of the options actually there, not an estimate of a larger
  population's;
* ``w = softmax(sigma)`` over the items of one task;
* ``stability = sum_i w_i * [pruned correct on i == dense correct on i]``, "correct"
  under lm-eval's ``acc`` (or ``acc_norm``), as everywhere in this library.

Identical models score 1; flipping every item's correctness scores 0. The softmax
subtracts the largest spread first, so huge spreads do not overflow.

Which per-option score, two forms (``form=``):

* ``"authors"`` (the default): what the authors' ``calculate_stability.py`` reads
  from OpenCompass's PPL inferencer, which stores under the name "PPL" the mean
  token negative log-likelihood of the WHOLE filled-in prompt, context and option,
  with nothing masked: the sum of ``-log P`` over every predicted token divided by
  the number of the prompt's tokens, the first, unpredicted one (BOS when the
  tokenizer adds one) included (``loss.sum(-1) / lens`` in OpenCompass's
  ``HuggingFace._get_ppl``). No exponential, despite the name. It needs
  :attr:`~streamline_lib.evaluation.zero_shot.ItemResult.prompt_nlls`: evaluate the
  dense model with ``evaluate_zero_shot(..., prompt_nll=True)``. The shared context
  dominates each mean, so options differ by tenths of a nat or less and the
  weights stay close to uniform: stability is then near the plain agreement rate,
  tilted a little towards decisive items;
* ``"continuation_perplexity"``: the option's own perplexity, ``exp`` of the mean
  NLL of the continuation only
  (:attr:`~streamline_lib.evaluation.zero_shot.ItemResult.perplexities`), this
  library's earlier reading of "PPL". The exponential of a short continuation's
  NLL ranges over orders of magnitude (a one-token option at 8 nats is a
  perplexity of about 3,000), so a few items get huge spreads and the softmax of
  raw spreads collapses onto about one item per task: stability per task can then
  only be about 0 or about 1. Kept as a named contrast.

:func:`effective_items` says how many items a set of weights rests on (Kish's
effective sample size, ``1 / sum w_i^2`` for weights summing to 1): about the task's
number of items for the authors' form, about 1 for the exponential one. Measured on
SmolLM2-135M (bfloat16), 50 items of each of the eight tasks: the authors' ``sigma``
has a median of 0.002 (RTE) to 0.24 nats (OpenBookQA), at most 0.9, and the weights
rest on 48 to 50 of the 50 items; the continuation perplexities' spreads have
medians of 1.7 to 1,400 and maxima up to 5e7, and their weights rest on 1.00 item
in every task.

The authors' public script has a bug, reproduced by
:func:`stability_authors_published` to show its effect: it counts the matching
items ``m`` and returns the sum of the FIRST ``m`` weights in item order, not the
weights of the matching items.

Pass the items of one task (the weights compare spreads, which live on different
scales in different tasks), for example ``dense.tasks["piqa"].items``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from .statistics import RESAMPLES, Interval
from .zero_shot import ItemResult, Metric, ZeroShotResult, check_comparable

__all__ = ["Form", "FORMS", "stability_spreads", "stability_weights", "effective_items", "stability",
           "stability_authors_published", "task_stability", "stability_interval", "stability_difference"]

#: Which per-option score the spreads are taken of: ``"authors"`` (the dense model's
#: whole-prompt mean NLL, OpenCompass's "PPL") or ``"continuation_perplexity"``.
Form = Literal["authors", "continuation_perplexity"]
#: The two forms.
FORMS: tuple[Form, ...] = ("authors", "continuation_perplexity")


def _option_scores(item: ItemResult, form: Form) -> tuple[float, ...]:
    if form == "continuation_perplexity":
        return item.perplexities
    if item.prompt_nlls is None:
        raise ValueError(f"the authors' form of stability needs whole-prompt NLLs, which dense item "
                         f"{item.task}[{item.index}] lacks: evaluate the dense model with prompt_nll=True "
                         "(or pass form='continuation_perplexity')")
    return item.prompt_nlls


def stability_spreads(dense_items: Sequence[ItemResult], form: Form = "authors") -> np.ndarray:
    """``sigma_i`` per item: the population std over the item's options of the dense model's
    whole-prompt mean NLL (``form="authors"``) or continuation perplexity (``"continuation_perplexity"``)."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; use one of {', '.join(FORMS)}")
    if not dense_items:
        raise ValueError("stability needs at least one item")
    return np.array([np.std(_option_scores(item, form)) for item in dense_items], dtype=np.float64)


def stability_weights(dense_items: Sequence[ItemResult], form: Form = "authors") -> np.ndarray:
    """The softmax over items of the dense model's per-item spread :func:`stability_spreads` (sums to 1)."""
    spreads = stability_spreads(dense_items, form)
    exps = np.exp(spreads - spreads.max())
    return exps / exps.sum()


def effective_items(weights: Sequence[float] | np.ndarray) -> float:
    """How many items a weighted mean effectively rests on: Kish's effective sample size.

    ``(sum w)^2 / sum w^2``, which is ``1 / sum w^2`` for weights summing to 1 such as
    :func:`stability_weights`: ``n`` for ``n`` equal weights, 1 when one item has all
    the weight.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not len(w) or np.any(w < 0) or not np.all(np.isfinite(w)) or not w.sum() > 0:
        raise ValueError("effective_items needs a non-empty list of finite, non-negative weights, not all zero")
    return float(w.sum() ** 2 / (w @ w))


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
              metric: Metric = "acc", form: Form = "authors") -> float:
    """The stability of the pruned model relative to the dense one, in [0, 1] (the paper's definition).

    ``metric`` says which answer counts as "correct": ``"acc"`` (highest
    log-likelihood, the default) or ``"acc_norm"``. ``form`` says what the weights
    are a softmax of (see the module docstring); only the dense items need
    ``prompt_nlls`` for the default ``"authors"``.
    """
    agree = _agreement(dense_items, pruned_items, metric)
    return float(stability_weights(dense_items, form) @ agree)


def stability_authors_published(dense_items: Sequence[ItemResult], pruned_items: Sequence[ItemResult],
                                metric: Metric = "acc", form: Form = "authors") -> float:
    """What the authors' public script computes (a bug): the sum of the first ``m`` weights in
    item order, where ``m`` is the number of items on which the two models agree."""
    matches = int(_agreement(dense_items, pruned_items, metric).sum())
    return float(stability_weights(dense_items, form)[:matches].sum())


def task_stability(dense: ZeroShotResult, pruned: ZeroShotResult, metric: Metric = "acc",
                   form: Form = "authors") -> dict[str, float]:
    """:func:`stability` on each task, by name: the weights compare spreads within one task only."""
    check_comparable(pruned, dense)
    return {name: stability(dense.tasks[name].items, pruned.tasks[name].items, metric, form) for name in dense.tasks}


def _resampled_stability(dense: ZeroShotResult, pruned_results: Sequence[ZeroShotResult], metric: Metric,
                         form: Form, resamples: int, seed: int) -> list[tuple[float, np.ndarray]]:
    """For each pruned result: the mean over tasks of the per-task stability, and that mean in each of
    ``resamples`` bootstrap resamples of every task's items (the same draws for every result: paired).
    A resample keeps the dense model's weights of the items it draws, renormalised."""
    for pruned in pruned_results:
        check_comparable(pruned, dense)
    rng = np.random.default_rng(seed)
    estimates = np.zeros(len(pruned_results))
    samples = np.zeros((len(pruned_results), resamples))
    for name, task in dense.tasks.items():
        weights = stability_weights(task.items, form)
        draws = rng.integers(0, len(weights), size=(resamples, len(weights)))
        drawn = weights[draws]
        for k, pruned in enumerate(pruned_results):
            agree = _agreement(task.items, pruned.tasks[name].items, metric)
            estimates[k] += weights @ agree
            samples[k] += (drawn * agree[draws]).sum(axis=1) / drawn.sum(axis=1)
    tasks = len(dense.tasks)
    return [(estimate / tasks, sample / tasks) for estimate, sample in zip(estimates, samples)]


def _interval(estimate: float, samples: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return Interval(float(estimate), float(low), float(high), level)


def stability_interval(dense: ZeroShotResult, pruned: ZeroShotResult, metric: Metric = "acc",
                       form: Form = "authors", resamples: int = RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> Interval:
    """The mean over tasks of the per-task stability, with a bootstrap interval over each task's items."""
    (estimate, samples), = _resampled_stability(dense, [pruned], metric, form, resamples, seed)
    return _interval(estimate, samples, level)


def stability_difference(dense: ZeroShotResult, a: ZeroShotResult, b: ZeroShotResult, metric: Metric = "acc",
                         form: Form = "authors", resamples: int = RESAMPLES, seed: int = 0,
                         level: float = 0.95) -> Interval:
    """Stability of ``a`` minus that of ``b`` (both against ``dense``), paired: the same items in every
    resample, so an interval that contains 0 is a tie."""
    (estimate_a, samples_a), (estimate_b, samples_b) = _resampled_stability(dense, [a, b], metric, form,
                                                                            resamples, seed)
    return _interval(estimate_a - estimate_b, samples_a - samples_b, level)
