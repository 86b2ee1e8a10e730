"""Paired comparisons of two models scored on the same items, with intervals.

Every model in the book answers the same evaluation items
(:data:`streamline_lib.data.zero_shot_tasks.EVAL_SET`), so two models are compared item by
item: a paired bootstrap resamples items (within each task, the same draw for both
models) and recomputes the macro-average difference, retention and above-chance
retention; the exact McNemar test counts the items only one of the two answers
right. Pairing removes the items' own difficulty from the noise, which makes the
interval of a difference several times narrower than two separate intervals.

Per-item log-likelihood margins (the gold option's log-likelihood minus the best
other option's) change continuously where accuracy only flips at zero, so their
paired difference can separate two models whose accuracies tie.

A difference whose interval contains 0 is a tie; the book's verdict rules say so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas

from .zero_shot import ItemResult, Metric, ScoredItem, TaskResult, ZeroShotResult, check_comparable, check_metric

__all__ = [
    "Interval",
    "Comparison",
    "compare",
    "compare_tasks",
    "tasks_above_chance",
    "mean_interval",
    "comparison_table",
    "accuracy_interval",
    "precision_note",
    "loglik_margin",
    "mcnemar_exact",
]

RESAMPLES = 2000  # bootstrap resamples: the 2.5% and 97.5% quantiles move by well under 0.001


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval ``[low, high]`` at ``level``."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    def above(self, value: float = 0.0) -> bool:
        """Whether the whole interval lies above ``value`` (significantly greater)."""
        return self.low > value

    def below(self, value: float = 0.0) -> bool:
        """Whether the whole interval lies below ``value`` (significantly smaller)."""
        return self.high < value

    def excludes(self, value: float = 0.0) -> bool:
        """Whether ``value`` is outside the interval (for a difference: not a tie)."""
        return self.above(value) or self.below(value)

    def __str__(self) -> str:
        return f"{self.estimate:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"

    def __format__(self, spec: str) -> str:
        """``f"{interval:.1%}"`` -> ``"79.6% [77.3%, 81.9%]"``: the estimate and both ends in one format;
        an empty spec gives :meth:`__str__`'s signed form, which suits differences."""
        if not spec:
            return str(self)
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


@dataclass(frozen=True)
class Comparison:
    """Model ``a`` against model ``b`` (usually the dense one) on the same items."""

    items: int  # items both models answered
    tasks: int
    metric: Metric
    difference: Interval  # macro-average accuracy of a minus that of b
    retention: Interval  # a's macro-average accuracy / b's
    above_chance_retention: Interval  # (a - chance) / (b - chance), macro averages
    a_only: int  # items a answers right and b wrong
    b_only: int  # items b answers right and a wrong
    mcnemar_p: float  # exact two-sided McNemar test of a_only against b_only
    margin_difference: Interval  # mean over items (macro over tasks) of a's log-likelihood margin minus b's


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value: a binomial test of the discordant pairs at 1/2."""
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be non-negative, got {a_only} and {b_only}")
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(a_only, b_only) + 1)) / 2**discordant
    return min(1.0, 2 * tail)


def loglik_margin(item: ScoredItem) -> float:
    """The gold option's log-likelihood minus the best other option's (> 0 iff ``acc`` is right).

    For a last-word item (:class:`~streamline_lib.evaluation.last_word.LastWordResult`) its
    ``margin``: the smallest gap, over the word's tokens, between the token's log-probability
    and the best other token's (> 0 iff every token is the unique argmax).
    """
    if not isinstance(item, ItemResult):
        return item.margin
    others = [ll for i, ll in enumerate(item.logliks) if i != item.gold]
    return item.logliks[item.gold] - max(others)


def _correct(task: TaskResult, metric: Metric) -> np.ndarray:
    """1.0 where the task's item is answered right under ``metric``, else 0.0."""
    return np.array([item.is_correct(metric) for item in task.items], dtype=float)


def _quantiles(samples: np.ndarray, estimate: float, level: float) -> Interval:
    if not np.isfinite(samples).all():  # a ratio whose denominator can be 0 (dense at chance)
        return Interval(float(estimate), math.nan, math.nan, level)
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return Interval(float(estimate), float(low), float(high), level)


def _bootstrap_means(values_by_task: list[np.ndarray], draws: list[np.ndarray]) -> np.ndarray:
    """Macro average over tasks of each resample's per-task mean: shape ``(resamples,)``."""
    return np.mean([values[draw].mean(axis=1) for values, draw in zip(values_by_task, draws)], axis=0)


def _draws(sizes: list[int], resamples: int, seed: int) -> list[np.ndarray]:
    """One ``(resamples, n)`` index array per task, drawn with replacement."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, size=(resamples, n)) for n in sizes]


def _check_level(level: float, resamples: int) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95; got {level}")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100 for a stable interval; got {resamples}")


def compare(a: ZeroShotResult, b: ZeroShotResult, metric: Metric = "acc", resamples: int = RESAMPLES,
            seed: int = 0, level: float = 0.95) -> Comparison:
    """Paired comparison of ``a`` with ``b`` (e.g. a pruned model with the dense one).

    A stratified paired bootstrap: each resample draws every task's items with
    replacement, the same draw for both models, and recomputes the macro averages.
    Intervals are percentile intervals at ``level``; the same ``seed`` gives the
    same intervals.
    """
    check_metric(metric)
    _check_level(level, resamples)
    check_comparable(a, b)
    names = list(b.tasks)
    correct_a = [_correct(a.tasks[t], metric) for t in names]
    correct_b = [_correct(b.tasks[t], metric) for t in names]
    margins = [np.array([loglik_margin(x) - loglik_margin(y) for x, y in zip(a.tasks[t].items, b.tasks[t].items)])
               for t in names]
    draws = _draws([len(c) for c in correct_b], resamples, seed)
    mean_a, mean_b = _bootstrap_means(correct_a, draws), _bootstrap_means(correct_b, draws)
    chance = b.average_chance
    with np.errstate(divide="ignore", invalid="ignore"):
        retention = mean_a / mean_b
        above_chance = (mean_a - chance) / (mean_b - chance)
    avg_a, avg_b = a.average(metric), b.average(metric)
    a_only = int(sum(((ca == 1) & (cb == 0)).sum() for ca, cb in zip(correct_a, correct_b)))
    b_only = int(sum(((ca == 0) & (cb == 1)).sum() for ca, cb in zip(correct_a, correct_b)))
    return Comparison(
        items=sum(len(c) for c in correct_b),
        tasks=len(names),
        metric=metric,
        difference=_quantiles(mean_a - mean_b, avg_a - avg_b, level),
        retention=_quantiles(retention, avg_a / avg_b if avg_b else math.nan, level),
        above_chance_retention=_quantiles(
            above_chance, (avg_a - chance) / (avg_b - chance) if avg_b != chance else math.nan, level),
        a_only=a_only,
        b_only=b_only,
        mcnemar_p=mcnemar_exact(a_only, b_only),
        margin_difference=_quantiles(_bootstrap_means(margins, draws),
                                     float(np.mean([m.mean() for m in margins])), level),
    )


def compare_tasks(a: ZeroShotResult, b: ZeroShotResult, metric: Metric = "acc", resamples: int = RESAMPLES,
                  seed: int = 0, level: float = 0.95) -> dict[str, Comparison]:
    """:func:`compare` on each task alone, by task name (e.g. where pruning raised a task's accuracy)."""
    check_comparable(a, b)
    return {name: compare(a.subset([name]), b.subset([name]), metric, resamples, seed, level) for name in b.tasks}


def tasks_above_chance(result: ZeroShotResult, metric: Metric = "acc", resamples: int = RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> list[str]:
    """The tasks whose accuracy interval lies wholly above chance: where a model has a margin to keep.

    On a small model several tasks sit at or below chance; their above-chance retention is
    noise, so a rule about what pruning keeps says more on the tasks this returns.
    """
    return [name for name in result.tasks
            if accuracy_interval(result.subset([name]), metric, resamples, seed, level).above(result.tasks[name].chance)]


def accuracy_interval(result: ZeroShotResult, metric: Metric = "acc", resamples: int = RESAMPLES,
                      seed: int = 0, level: float = 0.95) -> Interval:
    """Bootstrap interval of one model's macro-average accuracy (resampling items within tasks)."""
    check_metric(metric)
    _check_level(level, resamples)
    correct = [_correct(task, metric) for task in result.tasks.values()]
    samples = _bootstrap_means(correct, _draws([len(c) for c in correct], resamples, seed))
    return _quantiles(samples, result.average(metric), level)


def mean_interval(values: np.ndarray | list[float], resamples: int = RESAMPLES, seed: int = 0,
                  level: float = 0.95) -> Interval:
    """Bootstrap interval of the mean of per-item ``values`` (e.g. 0/1 correctness, or the paired
    difference of two models' correctness on the same items)."""
    _check_level(level, resamples)
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"mean_interval needs a non-empty 1-D array of per-item values, got shape {values.shape}")
    return _quantiles(_bootstrap_means([values], _draws([len(values)], resamples, seed)), float(values.mean()), level)


def precision_note(result: ZeroShotResult, metric: Metric = "acc") -> str:
    """One line on what the numbers rest on: items, tasks and the accuracy's 95% interval."""
    interval = accuracy_interval(result, metric)
    return (f"{len(result.items):,} items over {len(result.tasks)} tasks per model; macro-average {metric} "
            f"{interval.estimate:.3f}, 95% interval [{interval.low:.3f}, {interval.high:.3f}] "
            f"(+/- {(interval.high - interval.low) / 2:.3f}); differences between two models are paired "
            "over the same items and are narrower")


def comparison_table(comparisons: Mapping[str, Comparison]) -> pandas.DataFrame:
    """One row per named comparison: the intervals as text, the McNemar counts and p-value."""
    rows = {
        name: {
            "items": c.items,
            f"{c.metric} difference [95%]": str(c.difference),
            "retention [95%]": f"{c.retention:.3f}",
            "above-chance retention [95%]": f"{c.above_chance_retention:.3f}",
            "only a right": c.a_only,
            "only b right": c.b_only,
            "McNemar p": c.mcnemar_p,
            "log-lik margin difference [95%]": str(c.margin_difference),
        }
        for name, c in comparisons.items()
    }
    return pandas.DataFrame.from_dict(rows, orient="index")
