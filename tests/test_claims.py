"""The ledger reads back what chapters saved, in claim order, and refuses malformed verdicts."""

from __future__ import annotations

import pytest

from streamline_lib.claims import ClaimVerdict, ledger, load_chapter_results, save_chapter_results


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


def test_empty_folder_gives_an_empty_ledger(tmp_path):
    assert ledger(tmp_path / "missing").empty


@pytest.mark.parametrize(("claim", "word"), [("C1", "maybe"), ("claim 1", "holds"), ("C123", "holds")])
def test_malformed_verdicts_are_refused(claim, word):
    with pytest.raises(ValueError):
        verdict(claim, word)
