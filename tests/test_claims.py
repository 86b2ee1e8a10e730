"""The ledger reads back what chapters saved, in claim order, and refuses malformed verdicts."""

from __future__ import annotations

import pytest

from streamline_lib.book.claims import (
    NOT_RUN,
    RETENTION_MEASURES,
    VERDICTS,
    ClaimVerdict,
    beyond,
    decide,
    every,
    ledger,
    ledger_by_model,
    load_chapter_results,
    parts_text,
    retention_by_model,
    save_chapter_results,
    within,
)
from streamline_lib.core import files
from streamline_lib.evaluation.statistics import Interval


def verdict(claim: str, verdict: str = "holds") -> ClaimVerdict:
    return ClaimVerdict(claim, "a claim", "92%", "paper, Table 1", "90.1%", verdict, "because")


def test_round_trip_in_claim_order(tmp_path):
    save_chapter_results(tmp_path, "06_sparsity", [verdict("C6", "partly"), verdict("C5")], {"retained": 0.9})
    save_chapter_results(tmp_path, "02_redundancy", [verdict("C1"), verdict("C12", "does not hold")], {})
    table = ledger(tmp_path)
    assert table["claim"].tolist() == ["C1", "C5", "C6", "C12"]  # numeric order, not text order
    assert table.set_index("claim")["verdict"].to_dict() == {
        "C1": "holds", "C5": "holds", "C6": "partly", "C12": "does not hold"}
    assert load_chapter_results(tmp_path)["06_sparsity"]["numbers"] == {"retained": 0.9}


def test_saving_is_atomic_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_chapter_results(tmp_path, "06_sparsity", [verdict("C6")], {"retained": 0.9})
    before = path.read_text()

    def crash_before_the_rename(source, target):
        raise OSError("killed")

    monkeypatch.setattr(files.os, "replace", crash_before_the_rename)
    with pytest.raises(OSError, match="killed"):
        save_chapter_results(tmp_path, "06_sparsity", [verdict("C6", "partly")], {"retained": 0.5})
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["06_sparsity.json"], "no temporary left behind"


def test_a_temporary_beside_the_results_is_not_read_as_a_chapter(tmp_path):
    save_chapter_results(tmp_path, "06_sparsity", [verdict("C6")], {})
    (tmp_path / f"{files.temporary_name('02_redundancy.json')}").write_text('{"chapter": "02_redun')
    assert list(load_chapter_results(tmp_path)) == ["06_sparsity"]


def test_empty_folder_gives_an_empty_ledger(tmp_path):
    assert ledger(tmp_path / "missing").empty


@pytest.mark.parametrize(("claim", "word"), [("C1", "maybe"), ("claim 1", "holds"), ("C123", "holds")])
def test_malformed_verdicts_are_refused(claim, word):
    with pytest.raises(ValueError):
        verdict(claim, word)


def test_ledger_by_model_puts_models_side_by_side(tmp_path):
    save_chapter_results(tmp_path / "a", "05_sparsity", [verdict("C5", "partly"), verdict("C6")], {})
    save_chapter_results(tmp_path / "a", "01_redundancy", [verdict("C1")], {})
    save_chapter_results(tmp_path / "b", "05_sparsity", [verdict("C5", "does not hold"),
                                                        verdict("C6", "does not apply")], {})
    table = ledger_by_model({"model a": tmp_path / "a", "model b": tmp_path / "b"}).set_index("claim")
    assert table.index.tolist() == ["C1", "C5", "C6"]
    assert table["model a: verdict"].tolist() == ["holds", "partly", "holds"]
    assert table["model b: verdict"].tolist() == [NOT_RUN, "does not hold", "does not apply"]
    assert table.loc["C1", "chapter"] == "01_redundancy" and table.loc["C1", "model b: ours"] == ""


def test_retention_by_model_reads_the_sparsity_sweep_of_each_run(tmp_path):
    row = {"removed (all parameters)": 0.237, "panel retention": 0.8, "panel above-chance retention": 0.6,
           "8 tasks retention": 0.9}
    sweep = [{"target": 0.25, "variant": "none", **row, "panel retention": 0.7},
             {"target": 0.25, "variant": "layer", **row}, {"target": 0.5, "variant": "layer", **row}]
    save_chapter_results(tmp_path / "a", "05_sparsity", [verdict("C5")], {"sweep": sweep})
    save_chapter_results(tmp_path / "old", "05_sparsity", [verdict("C5")], {"sweep": [{"target": 0.25}]})
    table = retention_by_model({"a": tmp_path / "a", "old layout": tmp_path / "old", "none": tmp_path / "none"})
    assert table.index.tolist() == ["a"] and table.loc["a"].to_dict() == row
    assert list(table.columns) == list(RETENTION_MEASURES)


@pytest.mark.parametrize(("parts", "verdict"), [
    ({"a": True, "b": True}, "holds"),
    ({"a": False, "b": False}, "does not hold"),
    ({"a": True, "b": False}, "partly"),
    ({"a": True, "b": False, "c": None}, "partly"),
    ({"a": True, "b": None}, "undecided"),
    ({"a": None}, "undecided"),
    ({"a": False, "b": None}, "does not hold"),  # a part decided against sinks the claim
])
def test_one_rule_decides_every_claim(parts, verdict):
    assert decide(parts) == verdict and verdict in VERDICTS


@pytest.mark.parametrize(("outcomes", "expected"), [
    ([True, True], True), ([True, False], False), ([None, False], False), ([True, None], None), ([None], None),
])
def test_every_case_must_hold_and_one_failure_decides_against(outcomes, expected):
    assert every(outcomes) is expected


def test_every_refuses_no_cases_and_non_outcomes():
    with pytest.raises(ValueError, match="at least one"):
        every([])
    with pytest.raises(ValueError, match="True, False or None"):
        every([True, 0.5])


def test_parts_text_names_each_part_and_its_outcome():
    assert parts_text({"beats removal": True, "closer to dense": None, "faster": False}) == \
        "beats removal: yes; closer to dense: undecided; faster: no"


def test_decide_refuses_no_parts_and_non_outcomes():
    with pytest.raises(ValueError, match="at least one"):
        decide({})
    with pytest.raises(ValueError, match="True, False or None"):
        decide({"a": 0.3})


def test_an_interval_decides_only_when_it_clears_the_line_or_the_band():
    assert beyond(Interval(0.02, 0.01, 0.03)) is True
    assert beyond(Interval(-0.02, -0.03, -0.01)) is False
    assert beyond(Interval(0.01, -0.01, 0.03)) is None
    assert within(Interval(0.0, -0.01, 0.01), margin=0.015) is True  # a tie, shown
    assert within(Interval(0.05, 0.03, 0.07), margin=0.015) is False  # a difference, shown
    assert within(Interval(0.0, -0.03, 0.03), margin=0.015) is None  # too wide to call a tie: undecided
