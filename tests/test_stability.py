"""The stability metric on hand-computed examples, in both forms, and the authors' published variant."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamline_lib.evaluation.stability import (
    FORMS,
    effective_items,
    stability,
    stability_authors_published,
    stability_difference,
    stability_interval,
    stability_spreads,
    stability_weights,
    task_stability,
)
from streamline_lib.evaluation.zero_shot import ItemResult, TaskResult, ZeroShotResult


def _item(index: int, ppls: tuple[float, ...], gold: int, num_chars: tuple[int, ...] | None = None,
          task: str = "toy", prompt_nlls: tuple[float, ...] | None = None) -> ItemResult:
    """An item whose options have the given perplexities (one token each, so loglik = -ln ppl).

    Its whole-prompt NLLs are ``prompt_nlls``, by default the same numbers as the
    perplexities, so both forms of the metric see the same spreads.
    """
    return ItemResult(task, index, gold, logliks=tuple(-math.log(p) for p in ppls),
                      num_tokens=(1,) * len(ppls), num_chars=num_chars or (1,) * len(ppls),
                      prompt_nlls=tuple(map(float, ppls)) if prompt_nlls is None else prompt_nlls)


# Dense PPL spreads (population std): item 0: std(1, 3) = 1; item 1: std(2, 2) = 0; item 2: std(1, 5) = 2.
# The acc answer is option 0 everywhere (lowest PPL; item 1 is a tie, won by the first option).
DENSE = [_item(0, (1, 3), gold=0), _item(1, (2, 2), gold=0), _item(2, (1, 5), gold=1)]  # right, right, wrong
SOFTMAX = np.exp([1.0, 0.0, 2.0]) / np.exp([1.0, 0.0, 2.0]).sum()  # [0.2447, 0.0900, 0.6652]


@pytest.mark.parametrize("form", FORMS)
def test_weights_are_a_softmax_of_population_std(form):
    assert stability_weights(DENSE, form) == pytest.approx(SOFTMAX)
    assert stability_weights(DENSE, form).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("form", FORMS)
def test_three_items_by_hand_and_the_authors_bug(form):
    pruned = [_item(0, (2, 9), gold=0), _item(1, (4, 1), gold=0), _item(2, (1, 2), gold=1)]  # right, wrong, wrong
    # Agreement with the dense model: yes, no, yes.
    e = math.e
    assert stability(DENSE, pruned, form=form) == pytest.approx((e + e**2) / (e + 1 + e**2))  # 0.9100
    # The published script: 2 matches -> the first two weights, whichever items matched.
    assert stability_authors_published(DENSE, pruned, form=form) == pytest.approx((e + 1) / (e + 1 + e**2))  # 0.3348


@pytest.mark.parametrize("form", FORMS)
def test_identical_models_score_one_and_flipped_models_zero(form):
    assert stability(DENSE, DENSE, form=form) == pytest.approx(1.0)
    assert stability_authors_published(DENSE, DENSE, form=form) == pytest.approx(1.0)
    flipped = [_item(0, (3, 1), gold=0), _item(1, (2, 1), gold=0), _item(2, (5, 1), gold=1)]  # wrong, wrong, right
    assert stability(DENSE, flipped, form=form) == 0.0
    assert stability_authors_published(DENSE, flipped, form=form) == 0.0


@pytest.mark.parametrize("form", FORMS)
def test_huge_perplexity_spreads_do_not_overflow(form):
    dense = [_item(0, (1.0, 1e6), gold=0), _item(1, (1.0, 2.0), gold=0)]
    weights = stability_weights(dense, form)
    assert np.all(np.isfinite(weights)) and weights[0] == pytest.approx(1.0) and weights[1] < 1e-300
    pruned = [_item(0, (1.0, 1e6), gold=0), _item(1, (2.0, 1.0), gold=0)]
    assert stability(dense, pruned, form=form) == pytest.approx(1.0)


@pytest.mark.parametrize("form", FORMS)
def test_acc_norm_counts_the_length_normalised_answers(form):
    # Option 1 has the higher PPL (acc answer: 0) but is much longer (acc_norm answer: 1).
    dense = [_item(0, (1.5, 2.0), gold=1, num_chars=(1, 20)), _item(1, (1, 3), gold=0)]
    pruned = [_item(0, (1.5, 2.0), gold=1, num_chars=(1, 20)), _item(1, (3, 1), gold=0)]
    # acc: dense wrong/right, pruned wrong/wrong. acc_norm: dense right/right, pruned right/wrong.
    weights = stability_weights(dense, form)
    assert stability(dense, pruned, metric="acc", form=form) == pytest.approx(weights[0])
    assert stability(dense, pruned, metric="acc_norm", form=form) == pytest.approx(weights[0])
    swapped = [_item(0, (1.5, 2.0), gold=1, num_chars=(20, 1)), dense[1]]  # acc_norm answer now 0: wrong
    assert stability(dense, swapped, metric="acc", form=form) == pytest.approx(1.0)
    assert stability(dense, swapped, metric="acc_norm", form=form) == pytest.approx(weights[1])
    with pytest.raises(ValueError, match="unknown metric"):
        stability(dense, pruned, metric="f1", form=form)


# Two items whose forms disagree: continuation perplexities far apart, whole-prompt NLLs close together.
# Item 0: PPL (2, 400) -> std 199; prompt NLLs (2.0, 2.2) -> std 0.1.
# Item 1: PPL (3, 3, 6) -> std sqrt(2); prompt NLLs (3.0, 3.0, 3.6) -> std sqrt(0.08) = 0.2828.
TWO = [_item(0, (2, 400), gold=0, prompt_nlls=(2.0, 2.2)), _item(1, (3, 3, 6), gold=0, prompt_nlls=(3.0, 3.0, 3.6))]


def test_authors_weights_are_a_softmax_of_the_whole_prompt_nll_spreads():
    assert stability_spreads(TWO) == pytest.approx([0.1, math.sqrt(0.08)])
    authors = np.exp([0.1, math.sqrt(0.08)]) / np.exp([0.1, math.sqrt(0.08)]).sum()  # [0.4545, 0.5455]
    assert stability_weights(TWO) == pytest.approx(authors)  # the default form
    assert stability_weights(TWO, "authors") == pytest.approx(authors)
    assert stability_spreads(TWO, "continuation_perplexity") == pytest.approx([199.0, math.sqrt(2)])
    continuation = stability_weights(TWO, "continuation_perplexity")
    assert continuation[0] == pytest.approx(1.0) and continuation[1] == pytest.approx(math.exp(math.sqrt(2) - 199))
    pruned = [_item(0, (400, 2), gold=0), _item(1, (3, 3, 6), gold=0)]  # item 0 flips, item 1 agrees
    assert stability(TWO, pruned) == pytest.approx(authors[1])  # the pruned items need no prompt NLLs
    assert stability(TWO, pruned, form="continuation_perplexity") == pytest.approx(continuation[1])
    assert stability_authors_published(TWO, pruned) == pytest.approx(authors[0])  # first m = 1 weight


def test_effective_items_is_kish_effective_sample_size():
    assert effective_items(np.full(7, 1 / 7)) == pytest.approx(7.0)
    assert effective_items([0.0, 1.0, 0.0]) == pytest.approx(1.0)
    assert effective_items([0.5, 0.25, 0.25]) == pytest.approx(1 / (0.25 + 0.0625 + 0.0625))  # 8 / 3
    assert effective_items([2.0, 1.0, 1.0]) == pytest.approx(8 / 3)  # scale-free
    assert effective_items(stability_weights(TWO)) == pytest.approx(1 / (stability_weights(TWO) ** 2).sum())
    for bad in ([], [0.0, 0.0], [1.0, -0.5], [np.nan, 1.0]):
        with pytest.raises(ValueError, match="effective_items needs"):
            effective_items(bad)


def test_the_authors_form_needs_dense_prompt_nlls():
    without = [ItemResult("toy", 3, 0, (-1.0, -2.0), (1, 1), (1, 1)), DENSE[0]]
    with pytest.raises(ValueError, match=r"dense item toy\[3\] lacks: evaluate the dense model with prompt_nll=True"):
        stability(without, without)
    with pytest.raises(ValueError, match="prompt_nll=True"):
        stability_authors_published(without, without)
    assert stability(without, without, form="continuation_perplexity") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown form 'ppl'; use one of authors, continuation_perplexity"):
        stability_weights(DENSE, "ppl")


def test_mismatched_items_are_rejected():
    with pytest.raises(ValueError, match="3 dense items but 2 pruned items"):
        stability(DENSE, DENSE[:2])
    with pytest.raises(ValueError, match=r"item 0 differs: dense toy\[0\] vs pruned toy\[1\]"):
        stability(DENSE, [DENSE[1], DENSE[0], DENSE[2]])
    with pytest.raises(ValueError, match="item 1 differs"):
        stability_authors_published(DENSE, [DENSE[0], _item(1, (2, 2), gold=0, task="other"), DENSE[2]])
    with pytest.raises(ValueError, match="at least one item"):
        stability([], [])


def _result(**tasks: list[ItemResult]) -> ZeroShotResult:
    return ZeroShotResult({name: TaskResult(name, tuple(items), chance=0.5) for name, items in tasks.items()},
                          limit=None, seed=None)


def _task_items(task: str, answers: list[int], gold: list[int]) -> list[ItemResult]:
    """Two-option items answered ``answers[i]`` (lower perplexity), all with equal spreads (uniform weights)."""
    return [_item(i, (1, 3) if a == 0 else (3, 1), gold=g, task=task) for i, (a, g) in enumerate(zip(answers, gold))]


GOLD = [0] * 20
DENSE_RESULT = _result(a=_task_items("a", [0] * 20, GOLD), b=_task_items("b", [0] * 10 + [1] * 10, GOLD))
CLOSE = _result(a=_task_items("a", [0] * 19 + [1], GOLD), b=_task_items("b", [0] * 10 + [1] * 10, GOLD))
FAR = _result(a=_task_items("a", [1] * 10 + [0] * 10, GOLD), b=_task_items("b", [1] * 10 + [0] * 10, GOLD))


def test_stability_interval_is_the_mean_of_the_task_stabilities_with_a_bootstrap():
    per_task = task_stability(DENSE_RESULT, CLOSE)
    assert per_task == pytest.approx({"a": 0.95, "b": 1.0})  # uniform weights: the share of agreeing items
    interval = stability_interval(DENSE_RESULT, CLOSE, resamples=500)
    assert interval.estimate == pytest.approx(0.975)
    assert interval.low < 0.975 <= interval.high <= 1.0
    assert stability_interval(DENSE_RESULT, DENSE_RESULT, resamples=200) == pytest.approx(
        stability_interval(DENSE_RESULT, DENSE_RESULT, resamples=200))
    assert stability_interval(DENSE_RESULT, DENSE_RESULT, resamples=200).low == 1.0


def test_stability_difference_is_paired_and_decides_a_clear_gap():
    gap = stability_difference(DENSE_RESULT, CLOSE, FAR, resamples=500)
    # CLOSE agrees on 19 + 20 items, FAR on 10 + 0: per task 0.95 - 0.5 and 1.0 - 0.0
    assert gap.estimate == pytest.approx((0.45 + 1.0) / 2)
    assert gap.low > 0
    tie = stability_difference(DENSE_RESULT, CLOSE, CLOSE, resamples=200)
    assert (tie.estimate, tie.low, tie.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="different tasks"):
        stability_difference(DENSE_RESULT, CLOSE, _result(a=_task_items("a", [0] * 20, GOLD)))
