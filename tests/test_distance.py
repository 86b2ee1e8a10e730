"""KL divergence from the dense model on tiny random llamas, and flips on hand-made zero-shot results."""

import dataclasses

import numpy as np
import pytest
import torch
from helpers import random_tokens, tiny_llama

from streamline_lib.evaluation.distance import (
    distance_from_dense,
    distance_table,
    flips,
    flips_by_task,
    paired_distance_difference,
)
from streamline_lib.evaluation.statistics import Interval
from streamline_lib.evaluation.zero_shot import ItemResult, TaskResult, ZeroShotResult
from streamline_lib.methods.pruning import prune

FAST = dict(progress=False, resamples=200)


@pytest.fixture(scope="module")
def dense():
    return tiny_llama()


@pytest.fixture(scope="module")
def pruned(dense):
    return prune(dense, 2, 2).model


@pytest.fixture(scope="module")
def windows():
    return random_tokens(num_seqs=6, seq_len=12)


def test_a_model_is_at_distance_zero_from_itself(dense, windows):
    distance = distance_from_dense(dense, dense, windows, batch_size=4, **FAST)
    assert distance.mean_kl == Interval(0.0, 0.0, 0.0)
    assert distance.median_kl == distance.p99_kl == 0.0
    assert distance.same_top == Interval(1.0, 1.0, 1.0)
    assert (distance.tokens, distance.sequences) == (6 * 11, 6)
    assert paired_distance_difference(distance, distance, resamples=200) == Interval(0.0, 0.0, 0.0)


def test_kl_matches_a_direct_full_tensor_computation(dense, pruned, windows):
    distance = distance_from_dense(dense, pruned, windows, batch_size=4, **FAST)  # batches of 4 and 2 windows
    with torch.no_grad():
        log_p = dense(windows).logits[:, :-1].double().log_softmax(-1)
        log_q = pruned(windows).logits[:, :-1].double().log_softmax(-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).numpy()
    assert distance.mean_kl.estimate > 0.01
    assert distance.mean_kl.estimate == pytest.approx(kl.mean(), abs=1e-6)
    assert distance.median_kl == pytest.approx(np.median(kl), abs=1e-6)
    assert distance.p99_kl == pytest.approx(np.quantile(kl, 0.99), abs=1e-6)
    assert np.array(distance.sequence_kl) == pytest.approx(kl.sum(axis=1), abs=1e-5)
    same_top = (log_p.argmax(-1) == log_q.argmax(-1)).double().mean().item()
    assert distance.same_top.estimate == pytest.approx(same_top)
    assert 0 < same_top < 1


def test_the_intervals_resample_whole_windows(dense, pruned, windows):
    distance = distance_from_dense(dense, pruned, windows, **FAST)
    assert distance.mean_kl.low < distance.mean_kl.estimate < distance.mean_kl.high
    assert distance.same_top.low <= distance.same_top.estimate <= distance.same_top.high
    one = distance_from_dense(dense, pruned, windows[:1], **FAST)  # many tokens, one window: nothing to resample
    assert one.mean_kl.low == one.mean_kl.estimate == one.mean_kl.high > 0
    assert one.same_top.low == one.same_top.high


def test_paired_difference_of_two_pruned_models(dense, pruned, windows):
    near = distance_from_dense(dense, prune(dense, 4, 1).model, windows, **FAST)
    far = distance_from_dense(dense, pruned, windows, **FAST)
    difference = paired_distance_difference(far, near, resamples=200)
    assert difference.estimate == pytest.approx(far.mean_kl.estimate - near.mean_kl.estimate)
    assert difference.low <= difference.estimate <= difference.high


def test_distances_on_other_windows_are_not_paired(dense, pruned, windows):
    a = distance_from_dense(dense, pruned, windows, **FAST)
    b = distance_from_dense(dense, pruned, windows.flip(0), **FAST)  # the same windows in another order
    with pytest.raises(ValueError, match="different token windows"):
        paired_distance_difference(a, b)


def test_bad_windows_are_refused(dense, pruned):
    with pytest.raises(ValueError, match="seq_len >= 2"):
        distance_from_dense(dense, pruned, torch.zeros(3, 1, dtype=torch.long), progress=False)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        distance_from_dense(dense, pruned, torch.full((2, 4), 64), progress=False)


# --- flips ----------------------------------------------------------------------------

def _task(name: str, answers: list[int], gold: int = 0, options: int = 3) -> TaskResult:
    """Items whose ``acc`` answer is ``answers[i]`` (the highest log-likelihood) and whose gold is ``gold``."""
    items = tuple(ItemResult(name, i, gold=gold, logliks=tuple(0.0 if o == a else -1.0 for o in range(options)),
                             num_tokens=(1,) * options, num_chars=(1,) * options)
                  for i, a in enumerate(answers))
    return TaskResult(name, items, chance=1 / options)


def _result(**tasks: TaskResult) -> ZeroShotResult:
    return ZeroShotResult(tasks, limit=None, seed=None)


DENSE = _result(a=_task("a", [0, 0, 1, 2, 0, 1]), b=_task("b", [0, 1, 0, 0]))
PRUNED = _result(a=_task("a", [0, 1, 0, 1, 0, 1]), b=_task("b", [2, 1, 0, 0]))


def test_flips_count_every_changed_answer():
    # a: item 1 right -> wrong, item 2 wrong -> right, item 3 wrong -> another wrong option
    # b: item 0 right -> wrong
    result = flips(PRUNED, DENSE, resamples=200)
    assert (result.items, result.changed, result.right_to_wrong, result.wrong_to_right) == (10, 4, 2, 1)
    assert result.changed_share.estimate == pytest.approx(0.4)
    assert result.right_to_wrong_share.estimate == pytest.approx(0.2)
    assert result.wrong_to_right_share.estimate == pytest.approx(0.1)
    assert result.changed_share.low < 0.4 < result.changed_share.high
    by_task = flips_by_task(PRUNED, DENSE, resamples=200)
    assert [(f.items, f.changed, f.right_to_wrong, f.wrong_to_right) for f in by_task.values()] == [(6, 3, 1, 1),
                                                                                                    (4, 1, 1, 0)]
    assert list(by_task) == ["a", "b"]


def test_a_model_flips_nothing_against_itself():
    result = flips(DENSE, DENSE, resamples=200)
    assert (result.changed, result.right_to_wrong, result.wrong_to_right) == (0, 0, 0)
    assert result.changed_share == Interval(0.0, 0.0, 0.0)


def test_flips_follow_the_metric():
    result = flips(PRUNED, DENSE, metric="acc_norm", resamples=200)  # one character per option: the same answers
    assert dataclasses.replace(result, metric="acc") == flips(PRUNED, DENSE, resamples=200)
    with pytest.raises(ValueError, match="unknown metric"):
        flips(PRUNED, DENSE, metric="f1")


def test_flips_on_other_items_are_refused():
    other = _result(a=_task("a", [0, 1, 0, 1, 0, 1]), b=_task("b", [2, 1, 0]))
    with pytest.raises(ValueError, match="different items"):
        flips(other, DENSE)
    with pytest.raises(ValueError, match="different tasks"):
        flips_by_task(_result(a=PRUNED.tasks["a"]), DENSE)


def test_distance_table_has_one_row_per_model_with_its_intervals(dense, pruned, windows):
    near = distance_from_dense(dense, pruned, windows, **FAST)
    same = distance_from_dense(dense, dense, windows, **FAST)
    table = distance_table({"pruned": near, "dense": same}, {"pruned": flips(PRUNED, DENSE, resamples=200)})
    assert list(table.index) == ["pruned", "dense"]
    assert table.loc["pruned", "mean KL (nats) [95%]"] == (f"{near.mean_kl.estimate:.3f} [{near.mean_kl.low:.3f}, "
                                                          f"{near.mean_kl.high:.3f}]")
    assert table.loc["dense", "same top token [95%]"] == "1.000 [1.000, 1.000]"
    assert table.loc["pruned", "answers changed [95%]"].startswith("0.400 [")
    assert table.loc["pruned", "items"] == 10 and np.isnan(table.loc["dense", "items"])


def test_a_cached_distance_is_the_same_and_keyed_by_both_models(dense, pruned, windows, tmp_path):
    first = distance_from_dense(dense, pruned, windows, cache=tmp_path, **FAST)
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert distance_from_dense(dense, pruned, windows, cache=tmp_path, **FAST) == first
    distance_from_dense(dense, dense, windows, cache=tmp_path, **FAST)  # another pruned model: another entry
    distance_from_dense(dense, pruned, windows[:4], cache=tmp_path, **FAST)  # other windows: another entry
    assert len(list(tmp_path.glob("*.json"))) == 3
