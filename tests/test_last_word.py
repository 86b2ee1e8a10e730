"""Last-word prediction (LAMBADA): greedy check and log-likelihood against hand numbers, and its place
in the zero-shot results (macro average, retention, paired comparison, flips, cache).

No data and no hub: a "counting" model whose logits are written by hand, and the tiny random llama
with its word-level tokenizer (``t0 .. t63``, split on whitespace).
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from streamline_lib.data.zero_shot_tasks import LastWordItem, MultipleChoiceItem, chance_level
from streamline_lib.evaluation import last_word, zero_shot
from streamline_lib.evaluation.distance import flips
from streamline_lib.evaluation.last_word import (
    LastWordResult,
    last_word_perplexity,
    score_last_word_items,
    score_last_words,
)
from streamline_lib.evaluation.statistics import compare, loglik_margin
from streamline_lib.evaluation.zero_shot import (
    ItemResult,
    ScoredItem,
    TaskResult,
    ZeroShotResult,
    above_chance_retention,
    encode_requests,
    evaluate_zero_shot,
    retention,
    score_requests,
)

VOCAB = 64
STRENGTH = 2.0


class CountingLM(nn.Module):
    """Predicts "the next number": at every position the logit of ``(token + 1) % VOCAB`` is
    STRENGTH, every other logit 0. So log P(next) = STRENGTH - log(e^STRENGTH + VOCAB - 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(max_position_embeddings=128)
        self.unused = nn.Parameter(torch.zeros(1))  # so that the scorer finds a device

    def forward(self, input_ids, attention_mask=None, use_cache=False, logits_to_keep=0):
        logits = STRENGTH * nn.functional.one_hot((input_ids + 1) % VOCAB, VOCAB).float()
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


HIT = STRENGTH - math.log(math.exp(STRENGTH) + VOCAB - 1)  # log-probability of the predicted token
MISS = -math.log(math.exp(STRENGTH) + VOCAB - 1)  # of any other token


def _words(text: str) -> tuple[int, ...]:
    return tuple(int(word[1:]) for word in text.split())


@pytest.fixture(scope="module")
def words_tokenizer():
    """The words t0 .. t63 and nothing else (the ``tiny`` fixture's tokenizer makes "t1" its EOS, which an
    added-token match finds inside "t10" too)."""
    from helpers import word_level_tokenizer

    return word_level_tokenizer(VOCAB)


ITEMS = [
    LastWordItem("toy_words", 0, "t3 t4 t5", " t6"),  # the next number: right
    LastWordItem("toy_words", 1, "t3 t4 t5", " t9"),  # wrong; the model says t6
    LastWordItem("toy_words", 2, "t10 t11", " t12 t13"),  # two tokens, both right
    LastWordItem("toy_words", 3, "t20 t21 t22 t23 t24", " t25 t30"),  # first right, second wrong
]


def test_greedy_loglik_and_margin_by_hand(words_tokenizer):
    results = score_last_word_items(CountingLM(), words_tokenizer, ITEMS, progress=False)
    assert [r.greedy for r in results] == [True, False, True, False]
    assert [r.is_correct() for r in results] == [True, False, True, False]
    assert [r.predicted for r in results] == [(6,), (6,), (12, 13), (25, 26)]
    assert [r.answer() for r in results] == [r.predicted for r in results]
    assert [r.num_tokens for r in results] == [1, 1, 2, 2]
    assert [r.loglik for r in results] == pytest.approx([HIT, MISS, 2 * HIT, HIT + MISS], abs=1e-5)
    # the smallest gap between the word's token and the best other token: +STRENGTH if all are argmax
    assert [r.margin for r in results] == pytest.approx([STRENGTH, -STRENGTH, STRENGTH, -STRENGTH], abs=1e-5)
    assert [loglik_margin(r) for r in results] == [r.margin for r in results]
    assert results[2].perplexity == pytest.approx(math.exp(-HIT), rel=1e-5)
    assert [(r.task, r.index) for r in results] == [("toy_words", i) for i in range(4)]


def test_lambada_perplexity_is_lm_evals_mean_over_passages(words_tokenizer):
    results = score_last_word_items(CountingLM(), words_tokenizer, ITEMS, progress=False)
    expected = math.exp(-(HIT + MISS + 2 * HIT + HIT + MISS) / 4)  # per passage, not per token
    assert last_word_perplexity(results) == pytest.approx(expected, rel=1e-5)
    assert last_word_perplexity(TaskResult("toy_words", results, 0.0)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="LastWordResult"):
        last_word_perplexity([])


def test_acc_norm_is_acc_and_metrics_are_checked():
    right = LastWordResult("t", 0, -0.5, 1, True, 1.0, (7,))
    assert right.is_correct("acc_norm") and right.answer("acc_norm") == (7,) and right.correct
    with pytest.raises(ValueError, match="unknown metric"):
        right.is_correct("f1")
    with pytest.raises(ValueError, match="one predicted token per continuation token"):
        LastWordResult("t", 0, -0.5, 2, True, 1.0, (7,))
    assert isinstance(right, ScoredItem)
    assert isinstance(ItemResult("t", 0, 0, (-1.0, -2.0), (1, 1), (1, 1)), ScoredItem)


def test_item_requests_and_chance():
    item = LastWordItem("lambada_openai", 3, "He opened the", " door")
    assert item.requests() == [("He opened the", " door")]
    assert item.chance == 0.0 and chance_level([item]) == 0.0
    mixed = [item, MultipleChoiceItem("piqa", 0, "q", (" a", " b"), 0)]
    assert chance_level(mixed) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="empty"):
        LastWordItem("lambada_openai", 0, "context", " ")


# --- on a real (tiny, random) transformer ------------------------------------------------------

def _direct(model, tokens: tuple[int, ...], n: int) -> tuple[float, bool]:
    """One request alone, no batch, no padding: log P(continuation) and whether each token is the argmax."""
    with torch.no_grad():
        logprobs = model(torch.tensor([tokens[:-1]])).logits[0].float().log_softmax(-1)
    positions = range(len(tokens) - 1 - n, len(tokens) - 1)
    targets = tokens[-n:]
    return (sum(logprobs[p, t].item() for p, t in zip(positions, targets)),
            all(logprobs[p].argmax().item() == t for p, t in zip(positions, targets)))


def _tiny_items() -> list[LastWordItem]:
    return [LastWordItem("toy_words", i, " ".join(f"t{(7 * i + k) % 60 + 3}" for k in range(3 + 2 * i)),
                         " " + " ".join(f"t{(5 * i + k) % 60 + 3}" for k in range(1 + i % 2)))
            for i in range(7)]


def test_scores_match_one_request_at_a_time_and_the_choice_scorer(tiny, words_tokenizer):
    model, tokenizer = tiny[0], words_tokenizer
    items = _tiny_items()
    encoded = encode_requests(tokenizer, [item.requests()[0] for item in items], 128)
    batched = score_last_words(model, encoded, batch_size=16, progress=False)  # rows of 4 to 15 tokens, padded
    for (loglik, greedy, margin, predicted), request in zip(batched, encoded):
        direct_loglik, direct_greedy = _direct(model, request.tokens, request.num_continuation)
        assert loglik == pytest.approx(direct_loglik, abs=1e-4)
        assert greedy == direct_greedy == (predicted == request.tokens[-request.num_continuation:])
        assert (margin > 0) == greedy
    assert [s[0] for s in score_last_words(model, encoded, batch_size=1, progress=False)] == pytest.approx(
        [s[0] for s in batched], abs=1e-5)
    # the same log-likelihoods as the multiple-choice scorer's, both ways
    for share_prefix in (False, True):
        assert score_requests(model, encoded, progress=False, share_prefix=share_prefix) == pytest.approx(
            [s[0] for s in batched], abs=1e-4)
    with pytest.raises(ValueError, match="batch_size"):
        score_last_words(model, encoded, batch_size=0)


# --- a panel of a multiple-choice task and a last-word task --------------------------------------

CHOICES = [MultipleChoiceItem("toy_choice", i, f"t{i + 3} t{i + 4}", (f" t{i + 5}", f" t{i + 9}", f" t{i + 20}"),
                              i % 3) for i in range(6)]


def _panel_words(model) -> list[LastWordItem]:
    """Passages whose last word is, for the even ones, the model's own argmax (so greedy-right), else another."""
    items = []
    for i in range(8):
        context = [(7 * i + k) % 60 + 3 for k in range(3 + i)]
        with torch.no_grad():
            best = model(torch.tensor([context])).logits[0, -1].argmax().item()
        word = best if i % 2 == 0 else (best + 1) % VOCAB
        items.append(LastWordItem("toy_words", i, " ".join(f"t{t}" for t in context), f" t{word}"))
    return items


def _panel_choices(model, tokenizer) -> list[MultipleChoiceItem]:
    """CHOICES with the gold answer the model's own for the even ones, another for the odd ones."""
    preds = [result.pred for result in zero_shot.score_items(model, tokenizer, CHOICES, progress=False)]
    return [dataclasses.replace(item, gold=pred if item.index % 2 == 0 else (pred + 1) % 3)
            for item, pred in zip(CHOICES, preds)]


@pytest.fixture
def panel(tiny, words_tokenizer, monkeypatch):
    """evaluate_zero_shot on hand-made items: one multiple-choice task and one last-word task, each
    answered right by the (tiny, random) model on every other item."""
    words, choices = _panel_words(tiny[0]), _panel_choices(tiny[0], words_tokenizer)

    def load_tasks(names, limit, seed):
        return {"toy_choice": choices, "toy_words": words}
    monkeypatch.setattr(zero_shot, "load_tasks", load_tasks)
    return words


def _layers_removed(model, keep: int):
    import copy

    pruned = copy.deepcopy(model)
    pruned.model.layers = pruned.model.layers[:keep]
    pruned.config.num_hidden_layers = keep
    return pruned


def test_a_panel_gives_one_average_retention_and_paired_interval(tiny, words_tokenizer, panel):
    model, tokenizer = tiny[0], words_tokenizer
    dense = evaluate_zero_shot(model, tokenizer, progress=False)
    assert list(dense.tasks) == ["toy_choice", "toy_words"]
    words = dense.tasks["toy_words"]
    assert all(isinstance(item, LastWordResult) for item in words.items) and words.chance == 0.0
    assert [item.greedy for item in words.items] == [True, False] * 4  # as the panel was built
    assert words.acc == words.acc_norm == 0.5
    assert dense.tasks["toy_choice"].acc == 0.5
    assert dense.average_acc == pytest.approx((0.5 + 0.5) / 2)
    assert dense.average_chance == pytest.approx((1 / 3 + 0) / 2)
    assert words.items == score_last_word_items(model, tokenizer, panel, progress=False)
    pruned = evaluate_zero_shot(_layers_removed(model, 3), tokenizer, progress=False)
    kept = retention(pruned, dense)
    assert set(kept) == {"toy_choice", "toy_words", "average"}
    assert kept["toy_words"] == pytest.approx(pruned.tasks["toy_words"].acc / 0.5)
    assert kept["average"] == pytest.approx(pruned.average_acc / dense.average_acc)
    # chance is 0 for a last word, so its above-chance retention is the plain ratio
    assert above_chance_retention(pruned, dense)["toy_words"] == pytest.approx(kept["toy_words"])
    comparison = compare(pruned, dense, resamples=200)
    assert comparison.items == 14 and comparison.tasks == 2
    assert comparison.difference.estimate == pytest.approx(pruned.average_acc - dense.average_acc)
    same = compare(dense, dense, resamples=200)
    assert same.difference.low == same.difference.high == 0.0 and same.a_only == same.b_only == 0
    changed = flips(pruned, dense, resamples=200)
    assert changed.items == 14 and changed.right_to_wrong + changed.wrong_to_right <= changed.changed


def test_last_word_results_round_trip_the_cache(tiny, words_tokenizer, panel, tmp_path, monkeypatch):
    model, tokenizer = tiny[0], words_tokenizer
    first = evaluate_zero_shot(model, tokenizer, cache=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.json"))) == 2  # one entry per task

    def no_scoring(*args, **kwargs):
        raise AssertionError("a cached result must not run the model")
    monkeypatch.setattr(last_word, "score_last_words", no_scoring)
    again = evaluate_zero_shot(model, tokenizer, cache=tmp_path, progress=False)
    assert again.tasks["toy_words"] == first.tasks["toy_words"]  # exact: floats survive JSON unchanged
    assert isinstance(again, ZeroShotResult) and again.tasks["toy_choice"] == first.tasks["toy_choice"]
