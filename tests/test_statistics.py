"""Paired intervals and McNemar on hand-made results whose answers are known."""

import dataclasses
import math

import numpy as np
import pytest

from streamline_lib.evaluation.statistics import (
    Interval,
    accuracy_interval,
    compare,
    compare_tasks,
    comparison_table,
    loglik_margin,
    mcnemar_exact,
    mean_interval,
    precision_note,
    tasks_above_chance,
)
from streamline_lib.evaluation.zero_shot import ItemResult, TaskResult, ZeroShotResult


def _task(name: str, correct, margin: float = 1.0, options: int = 2) -> TaskResult:
    """Items answered right where ``correct`` says, the gold option ``margin`` nats ahead (or behind)."""
    items = tuple(ItemResult(name, i, gold=0, logliks=(-1.0 + (margin if right else -margin),) + (-1.0,) * (options - 1),
                             num_tokens=(1,) * options, num_chars=(1,) * options)
                  for i, right in enumerate(correct))
    return TaskResult(name, items, chance=1 / options)


def _result(**tasks: TaskResult) -> ZeroShotResult:
    return ZeroShotResult(tasks, limit=None, seed=None)


def test_mcnemar_exact_on_hand_values():
    assert mcnemar_exact(0, 6) == pytest.approx(0.03125)  # 2 * 0.5**6
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_exact(-1, 3)


def test_loglik_margin_is_gold_minus_best_other():
    item = ItemResult("t", 0, gold=1, logliks=(-3.0, -2.0, -2.5), num_tokens=(1, 1, 1), num_chars=(1, 1, 1))
    assert loglik_margin(item) == pytest.approx(0.5)
    assert (loglik_margin(item) > 0) == item.correct


def test_interval_predicates_and_text():
    interval = Interval(0.012, 0.004, 0.020)
    assert interval.above() and not interval.below() and interval.excludes()
    assert not Interval(0.01, -0.002, 0.02).excludes()  # a tie
    assert Interval(-0.3, -0.4, -0.2).below(-0.1)
    assert str(interval) == "+0.012 [+0.004, +0.020]"
    assert f"{interval}" == str(interval)  # no spec: the signed form of a difference
    assert f"{interval:.1%}" == "1.2% [0.4%, 2.0%]" and f"{Interval(2.0, 1.94, 2.07):.2f}x" == "2.00 [1.94, 2.07]x"


def test_identical_models_tie_exactly():
    rng = np.random.default_rng(1)
    model = _result(a=_task("a", rng.random(200) < 0.7), b=_task("b", rng.random(100) < 0.4, options=4))
    c = compare(model, model)
    assert c.items == 300 and c.tasks == 2
    assert (c.difference.low, c.difference.estimate, c.difference.high) == (0.0, 0.0, 0.0)
    assert c.retention.estimate == pytest.approx(1.0) and c.retention.low == pytest.approx(1.0)
    assert c.a_only == c.b_only == 0 and c.mcnemar_p == 1.0
    assert not c.difference.excludes()


def test_paired_interval_detects_a_consistent_loss_an_unpaired_view_would_miss():
    # b is right on 60% of 400 items; a is right on the same items minus 12 (3 points):
    # the per-model intervals overlap widely, the paired difference excludes 0.
    right_b = np.arange(400) % 5 < 3
    right_a = right_b.copy()
    right_a[np.flatnonzero(right_b)[:12]] = False
    a, b = _result(t=_task("t", right_a)), _result(t=_task("t", right_b))
    c = compare(a, b)
    assert c.difference.estimate == pytest.approx(-0.03)
    assert c.difference.below(0)
    assert (c.a_only, c.b_only) == (0, 12) and c.mcnemar_p == pytest.approx(2 * 0.5**12)
    interval_a, interval_b = accuracy_interval(a), accuracy_interval(b)
    assert interval_a.high > interval_b.low  # unpaired intervals overlap
    assert c.retention.estimate == pytest.approx(0.57 / 0.6)
    assert c.above_chance_retention.estimate == pytest.approx((0.57 - 0.5) / (0.6 - 0.5))
    assert c.retention.low < c.retention.estimate < c.retention.high


def test_margins_separate_models_whose_accuracies_tie():
    right = np.arange(300) % 3 > 0
    confident, hesitant = _result(t=_task("t", right, margin=2.0)), _result(t=_task("t", right, margin=0.5))
    c = compare(hesitant, confident)
    assert c.difference.estimate == 0 and not c.difference.excludes()
    # margins: right items 0.5 vs 2.0, wrong items -0.5 vs -2.0: mean difference (2 * -1.5 + 1.5) / 3
    assert c.margin_difference.estimate == pytest.approx(-0.5)
    assert c.margin_difference.below(0)


def test_macro_average_weighs_tasks_not_items():
    a = _result(big=_task("big", [True] * 900 + [False] * 100), small=_task("small", [False] * 10))
    b = _result(big=_task("big", [True] * 1000), small=_task("small", [True] * 10))
    c = compare(a, b)
    assert c.difference.estimate == pytest.approx((0.9 - 1.0 + 0.0 - 1.0) / 2)


def test_same_seed_same_interval_and_bad_arguments():
    rng = np.random.default_rng(2)
    a, b = _result(t=_task("t", rng.random(150) < 0.5)), _result(t=_task("t", rng.random(150) < 0.6))
    # field by field, NaN equal to NaN (an undefined retention is NaN; dataclass equality says NaN != NaN from 3.13)
    np.testing.assert_equal(dataclasses.asdict(compare(a, b, seed=3)), dataclasses.asdict(compare(a, b, seed=3)))
    with pytest.raises(ValueError, match="level"):
        compare(a, b, level=95)
    with pytest.raises(ValueError, match="resamples"):
        compare(a, b, resamples=10)
    with pytest.raises(ValueError, match="different tasks"):
        compare(a, _result(u=_task("u", [True] * 150)))
    with pytest.raises(ValueError, match="metric"):
        compare(a, b, metric="f1")


def test_accuracy_interval_narrows_with_more_items_and_note_names_the_count():
    small = _result(t=_task("t", np.arange(100) % 2 == 0))
    large = _result(t=_task("t", np.arange(2000) % 2 == 0))
    width = [accuracy_interval(r).high - accuracy_interval(r).low for r in (small, large)]
    assert width[1] < width[0] / 3
    assert math.isclose(accuracy_interval(large).estimate, 0.5)
    assert "2,000 items over 1 tasks" in precision_note(large)


def test_comparison_table_has_one_row_per_comparison():
    right = np.arange(200) % 2 == 0
    dense = _result(t=_task("t", right))
    table = comparison_table({"same": compare(dense, dense), "worse": compare(_result(t=_task("t", ~right & (np.arange(200) % 4 == 1))), dense)})
    assert list(table.index) == ["same", "worse"]
    assert table.loc["same", "items"] == 200 and table.loc["worse", "only b right"] == 100
    # the dense model is at chance here: above-chance retention has no interval, and says so
    assert "nan" in table.loc["worse", "above-chance retention [95%]"]


def test_compare_tasks_finds_the_one_task_that_changed():
    same = np.arange(300) % 2 == 0
    better = same | (np.arange(300) % 4 == 1)  # 75 more right answers on task "u" only
    a = _result(t=_task("t", same), u=_task("u", better))
    b = _result(t=_task("t", same), u=_task("u", same))
    per_task = compare_tasks(a, b)
    assert list(per_task) == ["t", "u"]
    assert not per_task["t"].difference.excludes() and per_task["u"].difference.above(0)
    assert per_task["u"].difference.estimate == pytest.approx(0.25) and per_task["u"].items == 300


def test_tasks_above_chance_keeps_only_tasks_clearly_above_chance():
    clear = np.arange(300) % 4 != 0  # 75% right, two options: far above 50%
    near = np.arange(300) % 100 < 52  # 52% right: inside the noise of 300 items
    below = np.arange(300) % 10 < 3  # 30% right
    result = _result(clear=_task("clear", clear), near=_task("near", near), below=_task("below", below))
    assert tasks_above_chance(result) == ["clear"]
    assert tasks_above_chance(result.subset(["near", "below"])) == []
    with pytest.raises(ValueError, match="evaluated tasks"):
        result.subset(["piqa"])


def test_mean_interval_brackets_the_mean_and_refuses_empty_input():
    values = [1.0] * 30 + [0.0] * 70
    interval = mean_interval(values)
    assert interval.estimate == pytest.approx(0.3) and 0.2 < interval.low < 0.3 < interval.high < 0.4
    assert mean_interval(values) == interval  # seeded
    assert mean_interval([1.0] * 5).low == 1.0
    with pytest.raises(ValueError, match="non-empty 1-D array"):
        mean_interval([])
