"""Where a chapter run saves: the book's own run into results/, every other run beside it, never over it."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from streamline_lib.book.claims import ClaimVerdict, load_chapter_results
from streamline_lib.book.runs import BOOK_RESULTS, RUNS, chapter_run, run_parameters
from streamline_lib.models.loading import resolve_dtype

VERDICT = ClaimVerdict("C1", "statement", "paper", "source", "ours", "holds", "why")


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    """A notebooks/ folder of its own, as the chapters' working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _parameters(**changes):
    parameters = {"PROFILE": "book", "MODEL": "smollm2-135m", "DTYPE": "float32", "DEVICE": "cpu", "SEED": 0,
                  "SEQ_LEN": 256, "RESULTS_DIR": None}
    return {**parameters, **changes}


def test_parameters_are_the_upper_case_names_with_plain_values():
    namespace = {"MODEL": "m", "SIZES": [1, 2], "TASKS": {"a": 1}, "RESULTS_DIR": None, "model": "lower",
                 "TENSOR": torch.zeros(2), "ARRAY": np.zeros(2), "np": np, "_HIDDEN": 1, "In": ["cell"]}
    assert run_parameters(namespace) == {"MODEL": "m", "RESULTS_DIR": None, "SIZES": [1, 2], "TASKS": {"a": 1}}


def test_only_a_run_that_asks_writes_the_books_results(notebooks):
    book = chapter_run("01_redundancy", _parameters(RESULTS_DIR="results"))
    assert book.file == BOOK_RESULTS / "01_redundancy.json"
    book.save([VERDICT], {"n": 1})
    reader = chapter_run("01_redundancy", _parameters())  # the same book profile, but no RESULTS_DIR
    assert reader.file.parent == RUNS / "book-smollm2-135m-float32"
    assert reader.file.name.startswith("01_redundancy-") and reader.file != book.file


def test_every_parameter_that_changes_numbers_gets_its_own_file(notebooks):
    files = {chapter_run("02_metrics", parameters).file
             for parameters in (_parameters(), _parameters(SEQ_LEN=128), _parameters(SEED=1),
                                _parameters(PROFILE="workshop"), _parameters(MODEL="gemma3-270m"),
                                _parameters(DTYPE="bfloat16"))}
    assert len(files) == 6
    assert chapter_run("02_metrics", _parameters(MODEL="HuggingFaceTB/SmolLM2-360M")).file.parent.name == \
        "book-SmolLM2-360M-float32"


def test_a_reader_run_leaves_the_books_results_byte_for_byte_and_keeps_its_parameters(notebooks, capsys):
    chapter_run("03_replacement", _parameters(RESULTS_DIR="results")).save([VERDICT], {"ppl": 1.0})
    committed = (BOOK_RESULTS / "03_replacement.json").read_bytes()
    for changes in ({"PROFILE": "workshop"}, {"PROFILE": "smoke"}, {"MODEL": "gemma3-270m"}, {"SEQ_LEN": 64}):
        chapter_run("03_replacement", _parameters(**changes)).save([VERDICT], {"ppl": 2.0})
    assert (BOOK_RESULTS / "03_replacement.json").read_bytes() == committed
    saved = sorted(RUNS.rglob("*.json"))
    assert len(saved) == 4
    document = json.loads(saved[0].read_text())
    assert document["run"]["parameters"]["RESULTS_DIR"] is None and document["numbers"] == {"ppl": 2.0}
    assert "saved runs/" in capsys.readouterr().out


def test_the_same_run_again_replaces_its_own_file_and_says_so(notebooks, capsys):
    run = chapter_run("04_stability", _parameters(PROFILE="smoke"))
    run.save([VERDICT], {"x": 1})
    run.save([VERDICT], {"x": 2})
    assert "replacing the earlier run with the same parameters" in capsys.readouterr().out
    assert json.loads(run.file.read_text())["numbers"] == {"x": 2}


def test_a_workshop_or_smoke_run_that_names_the_books_folder_is_refused(notebooks):
    for folder in ("results", "results/gemma3-270m", "./results"):
        with pytest.raises(ValueError, match="never writes into the book's results .* leave RESULTS_DIR = None"):
            chapter_run("05_sparsity", _parameters(PROFILE="workshop", RESULTS_DIR=folder))
    assert chapter_run("05_sparsity", _parameters(PROFILE="smoke", RESULTS_DIR="my-results")).file.parent.name == \
        "my-results"


def test_the_run_uses_the_dtype_auto_resolves_to_here():
    run = chapter_run("00_tour", _parameters(DTYPE="auto"))
    assert run.dtype == str(resolve_dtype("auto")).removeprefix("torch.")
    assert f"-{run.dtype}" in run.file.parent.name


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="PROFILE = 'full' is not a run profile"):
        chapter_run("00_tour", _parameters(PROFILE="full"))
    with pytest.raises(ValueError, match="defines no RESULTS_DIR"):
        chapter_run("00_tour", {k: v for k, v in _parameters().items() if k != "RESULTS_DIR"})


def test_a_runs_folder_reads_by_chapter_with_the_newest_run_standing_for_it(notebooks):
    older = chapter_run("01_redundancy", _parameters(PROFILE="workshop"))
    older.save([VERDICT], {"n": 1})
    newer = chapter_run("01_redundancy", _parameters(PROFILE="workshop", SEED=3))
    newer.save([VERDICT], {"n": 2})
    os.utime(older.file, ns=(1, 1))
    saved = load_chapter_results(older.file.parent)
    assert list(saved) == ["01_redundancy"] and saved["01_redundancy"]["numbers"] == {"n": 2}


def test_a_smaller_profile_says_at_the_top_what_its_numbers_cannot_show(notebooks):
    book, workshop = (chapter_run("03_replacement", _parameters(PROFILE=p)).describe() for p in ("book", "workshop"))
    assert len(book.splitlines()) == 1 and "profile 'book'" in book
    assert "too wide to decide a claim" in workshop and workshop.splitlines()[0].endswith(".json")
