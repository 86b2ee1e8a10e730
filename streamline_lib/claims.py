"""The claims ledger: each chapter saves its verdicts and key numbers; the ledger page reads them.

A chapter calls :func:`save_chapter_results` at its end with one :class:`ClaimVerdict`
per claim it checks (the ids C1-C12 of the paper notes) and the numbers behind them.
The file is JSON, one per chapter, so a reader can open it and a later chapter or the
ledger can read it without re-running anything. :func:`ledger` puts every saved
verdict into one table, ordered by claim.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas

__all__ = ["VERDICTS", "ClaimVerdict", "save_chapter_results", "load_chapter_results", "ledger"]

VERDICTS: tuple[str, ...] = ("holds", "partly", "does not hold")


@dataclass(frozen=True)
class ClaimVerdict:
    """One claim checked on our model: what the paper reports, what we measured, and the verdict."""

    claim: str  # "C1" .. "C12", as in the paper notes
    statement: str  # the claim in one sentence
    paper: str  # the paper's number or finding
    paper_source: str  # where it is from: a table of the paper, the authors' repository, ...
    ours: str  # our number or finding, formatted from computed values
    verdict: str  # one of VERDICTS
    why: str  # one line

    def __post_init__(self) -> None:
        if not re.fullmatch(r"C\d{1,2}", self.claim):
            raise ValueError(f"claim {self.claim!r}: use the ids of the paper notes, C1 .. C12")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} for {self.claim}: use one of {', '.join(VERDICTS)}")


def save_chapter_results(folder: str | os.PathLike, chapter: str, verdicts: list[ClaimVerdict],
                         numbers: dict[str, Any]) -> Path:
    """Write ``folder/<chapter>.json`` with the chapter's verdicts and key numbers; returns the path."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    file = path / f"{chapter}.json"
    document = {"chapter": chapter, "verdicts": [asdict(v) for v in verdicts], "numbers": numbers}
    file.write_text(json.dumps(document, indent=1, ensure_ascii=False, default=float) + "\n", encoding="utf-8")
    return file


def load_chapter_results(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every chapter's saved results in ``folder``, by chapter name (empty when none were saved)."""
    files = sorted(Path(folder).glob("*.json"))
    return {file.stem: json.loads(file.read_text(encoding="utf-8")) for file in files}


def _claim_number(claim: str) -> int:
    return int(claim[1:])


def ledger(folder: str | os.PathLike) -> pandas.DataFrame:
    """One row per claim verdict saved in ``folder``, ordered by claim, with its chapter."""
    rows = [
        {"chapter": chapter, **verdict}
        for chapter, document in load_chapter_results(folder).items()
        for verdict in document["verdicts"]
    ]
    columns = ["claim", "statement", "paper", "paper_source", "ours", "verdict", "why", "chapter"]
    table = pandas.DataFrame(rows, columns=columns)
    order = sorted(range(len(table)), key=lambda i: (_claim_number(table["claim"][i]), table["chapter"][i]))
    return table.iloc[order].reset_index(drop=True)
