"""The stability metric on hand-computed examples, and the authors' published variant."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamline_lib.evaluation.stability import stability, stability_authors_published, stability_weights
from streamline_lib.evaluation.zero_shot import ItemResult


def _item(index: int, ppls: tuple[float, ...], gold: int, num_chars: tuple[int, ...] | None = None,
          task: str = "toy") -> ItemResult:
    """An item whose options have the given perplexities (one token each, so loglik = -ln ppl)."""
    return ItemResult(task, index, gold, logliks=tuple(-math.log(p) for p in ppls),
                      num_tokens=(1,) * len(ppls), num_chars=num_chars or (1,) * len(ppls))


# Dense PPL spreads (population std): item 0: std(1, 3) = 1; item 1: std(2, 2) = 0; item 2: std(1, 5) = 2.
# The acc answer is option 0 everywhere (lowest PPL; item 1 is a tie, won by the first option).
DENSE = [_item(0, (1, 3), gold=0), _item(1, (2, 2), gold=0), _item(2, (1, 5), gold=1)]  # right, right, wrong
SOFTMAX = np.exp([1.0, 0.0, 2.0]) / np.exp([1.0, 0.0, 2.0]).sum()  # [0.2447, 0.0900, 0.6652]


def test_weights_are_a_softmax_of_population_std():
    assert stability_weights(DENSE) == pytest.approx(SOFTMAX)
    assert stability_weights(DENSE).sum() == pytest.approx(1.0)


def test_three_items_by_hand_and_the_authors_bug():
    pruned = [_item(0, (2, 9), gold=0), _item(1, (4, 1), gold=0), _item(2, (1, 2), gold=1)]  # right, wrong, wrong
    # Agreement with the dense model: yes, no, yes.
    e = math.e
    assert stability(DENSE, pruned) == pytest.approx((e + e**2) / (e + 1 + e**2))  # 0.9100
    # The published script: 2 matches -> the first two weights, whichever items matched.
    assert stability_authors_published(DENSE, pruned) == pytest.approx((e + 1) / (e + 1 + e**2))  # 0.3348


def test_identical_models_score_one_and_flipped_models_zero():
    assert stability(DENSE, DENSE) == pytest.approx(1.0)
    assert stability_authors_published(DENSE, DENSE) == pytest.approx(1.0)
    flipped = [_item(0, (3, 1), gold=0), _item(1, (2, 1), gold=0), _item(2, (5, 1), gold=1)]  # wrong, wrong, right
    assert stability(DENSE, flipped) == 0.0
    assert stability_authors_published(DENSE, flipped) == 0.0


def test_huge_perplexity_spreads_do_not_overflow():
    dense = [_item(0, (1.0, 1e6), gold=0), _item(1, (1.0, 2.0), gold=0)]
    weights = stability_weights(dense)
    assert np.all(np.isfinite(weights)) and weights[0] == pytest.approx(1.0) and weights[1] < 1e-300
    assert stability(dense, [_item(0, (1.0, 1e6), gold=0), _item(1, (2.0, 1.0), gold=0)]) == pytest.approx(1.0)


def test_acc_norm_counts_the_length_normalised_answers():
    # Option 1 has the higher PPL (acc answer: 0) but is much longer (acc_norm answer: 1).
    dense = [_item(0, (1.5, 2.0), gold=1, num_chars=(1, 20)), _item(1, (1, 3), gold=0)]
    pruned = [_item(0, (1.5, 2.0), gold=1, num_chars=(1, 20)), _item(1, (3, 1), gold=0)]
    # acc: dense wrong/right, pruned wrong/wrong. acc_norm: dense right/right, pruned right/wrong.
    weights = stability_weights(dense)
    assert stability(dense, pruned, metric="acc") == pytest.approx(weights[0])
    assert stability(dense, pruned, metric="acc_norm") == pytest.approx(weights[0])
    swapped = [_item(0, (1.5, 2.0), gold=1, num_chars=(20, 1)), dense[1]]  # acc_norm answer now 0: wrong
    assert stability(dense, swapped, metric="acc") == pytest.approx(1.0)
    assert stability(dense, swapped, metric="acc_norm") == pytest.approx(weights[1])
    with pytest.raises(ValueError, match="unknown metric"):
        stability(dense, pruned, metric="f1")


def test_mismatched_items_are_rejected():
    with pytest.raises(ValueError, match="3 dense items but 2 pruned items"):
        stability(DENSE, DENSE[:2])
    with pytest.raises(ValueError, match=r"item 0 differs: dense toy\[0\] vs pruned toy\[1\]"):
        stability(DENSE, [DENSE[1], DENSE[0], DENSE[2]])
    with pytest.raises(ValueError, match="item 1 differs"):
        stability_authors_published(DENSE, [DENSE[0], _item(1, (2, 2), gold=0, task="other"), DENSE[2]])
    with pytest.raises(ValueError, match="at least one item"):
        stability([], [])
