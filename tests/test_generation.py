"""Generation tasks: lm-eval's prompts and exact match, greedy answers, caching, paired differences."""

from __future__ import annotations

import pytest

from streamline_lib.evaluation.generation import (
    GENERATION_TASKS,
    GenerationResult,
    _cut,
    evaluate_generation,
    exact_match,
    load_generation_task,
    paired_difference,
)


def test_exact_match_normalises_as_lm_eval():
    assert exact_match("The Beatles!", ["beatles"], ignore_articles=True)
    assert not exact_match("The Beatles", ["beatles"], ignore_articles=False)
    assert exact_match("Sunset Blvd.", ["Sunset Blvd"])
    assert exact_match("96", ["96"]) and not exact_match("961", ["96"])
    assert not exact_match("", ["x"])


def test_answers_stop_at_newline_full_stop_or_comma():
    assert _cut(" Paris, France") == "Paris"
    assert _cut(" 1972.\nQ: next") == "1972"
    assert _cut("\nParis") == ""


@pytest.mark.integration
def test_tasks_load_with_lm_eval_prompts():
    nq = load_generation_task("nq_open", limit=5, seed=0)
    assert len(nq) == 5 and [i.index for i in nq] == sorted(i.index for i in nq)
    assert nq[0].prompt.startswith("Answer these questions:\n\nQ: ") and nq[0].prompt.endswith("?\nA:")
    trivia = load_generation_task("trivia_qa", limit=3)
    assert trivia[0].prompt.startswith("Question: ") and len(trivia[0].answers) >= 1
    first = load_generation_task("arithmetic", limit=None)[0]
    assert first.prompt == "Calculate 5 + 91 =" and first.answers == ("96",)
    assert load_generation_task("nq_open", limit=5, seed=0) == nq  # seeded
    with pytest.raises(ValueError, match="unknown generation task 'gsm'; choose one of nq_open, trivia_qa"):
        load_generation_task("gsm")
    with pytest.raises(ValueError, match="limit must be a positive number"):
        load_generation_task("nq_open", limit=0)


@pytest.mark.integration
def test_greedy_answers_are_deterministic_and_cached(tiny, tmp_path, monkeypatch):
    model, tokenizer = tiny
    # the word-level tokenizer knows only t0 .. t63: ask with words it knows
    monkeypatch.setattr("streamline_lib.evaluation.generation.load_generation_task", lambda task, limit, seed: [
        type("Item", (), {"task": task, "index": i, "prompt": f"t{i} t{i + 1}", "answers": (f"t{i + 2}",)})()
        for i in range(6)])
    first = evaluate_generation(model, tokenizer, "arithmetic", limit=6, batch_size=4, cache=tmp_path, progress=False)
    assert len(first.predictions) == 6 and all(isinstance(p, str) for p in first.predictions)
    assert len(list(tmp_path.glob("*.json"))) == 1
    again = evaluate_generation(model, tokenizer, "arithmetic", limit=6, batch_size=2, cache=tmp_path, progress=False)
    assert again == first
    fresh = evaluate_generation(model, tokenizer, "arithmetic", limit=6, batch_size=2, cache=False, progress=False)
    assert fresh.predictions == first.predictions  # batching and left padding change nothing


def test_paired_difference_needs_the_same_items():
    a = GenerationResult("nq_open", (1, 2, 3, 4), ("a", "b", "c", "d"), (True, True, False, True))
    b = GenerationResult("nq_open", (1, 2, 3, 4), ("a", "x", "c", "y"), (True, False, False, False))
    diff = paired_difference(a, b)
    assert diff.estimate == pytest.approx(0.5) and diff.low >= 0
    assert a.accuracy == 0.75 and a.interval().low <= 0.75 <= a.interval().high
    with pytest.raises(ValueError, match="same task and items"):
        paired_difference(a, GenerationResult("nq_open", (1, 2, 3, 5), a.predictions, a.correct))
    assert set(GENERATION_TASKS) == {"nq_open", "trivia_qa", "arithmetic"}
