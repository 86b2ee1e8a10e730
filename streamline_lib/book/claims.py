"""The claims ledger: each chapter saves its verdicts and key numbers; the ledger page reads them.

A chapter calls :func:`save_chapter_results` at its end with one :class:`ClaimVerdict`
per claim it checks and the numbers behind them. Claim ids name the paper by their
letter: C1-C12 are LLM-Streamline's (the paper notes), S1.. SHARP's and R1.. ReplaceMe's
(the peers chapter).
The file is JSON, one per chapter, so a reader can open it and a later chapter or the
ledger can read it without re-running anything. :func:`ledger` puts every saved
verdict into one table, ordered by claim; :func:`ledger_by_model` puts several models' runs
(each saved to its own folder) side by side, one column per model.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas

from ..core.files import TEMPORARY_PREFIX, atomic_write_text
from ..evaluation.statistics import Interval

__all__ = ["VERDICTS", "PAPERS", "Outcome", "beyond", "within", "every", "decide", "parts_text", "ClaimVerdict", "save_chapter_results", "load_chapter_results", "ledger",
           "NOT_RUN", "OUTCOME_WORDS", "ledger_by_model", "RETENTION_MEASURES", "retention_by_model"]

VERDICTS: tuple[str, ...] = ("holds", "partly", "does not hold", "undecided", "does not apply")
"""The verdicts, in the ledger's order (:func:`decide` chooses among the first four). ``partly``: the
claim's parts disagree, one holds and another does not; ``undecided``: a measurement could not decide
(its interval straddles the line), and ``why`` gives the interval and what would decide it;
``does not apply``: the claim cannot be tested on this model (e.g. a sparsity its embedding's share of
the parameters makes impossible); ``why`` says what stops it."""
NOT_RUN = "not run"
"""What :func:`ledger_by_model` shows for a claim that a model's folder holds no verdict for."""
PAPERS: dict[str, str] = {"C": "LLM-Streamline", "S": "SHARP", "R": "ReplaceMe"}
"""Claim-id letter -> the paper whose claim it is, in the ledger's order."""


@dataclass(frozen=True)
class ClaimVerdict:
    """One claim checked on our model: what the paper reports, what we measured, and the verdict."""

    claim: str  # a letter of PAPERS and a number: "C1" .. "C12" (paper notes), "S1", "R1", ...
    statement: str  # the claim in one sentence
    paper: str  # the paper's number or finding
    paper_source: str  # where it is from: a table of the paper, the authors' repository, ...
    ours: str  # our number or finding, formatted from computed values
    verdict: str  # one of VERDICTS
    why: str  # one line

    def __post_init__(self) -> None:
        if not re.fullmatch(rf"[{''.join(PAPERS)}]\d{{1,2}}", self.claim):
            letters = ", ".join(f"{letter}: {paper}" for letter, paper in PAPERS.items())
            raise ValueError(f"claim {self.claim!r}: use a paper's letter ({letters}) and a number, "
                             "e.g. C1 .. C12 for the paper notes' claims")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} for {self.claim}: use one of {', '.join(VERDICTS)}")


Outcome = bool | None
"""One part of a claim, measured: True (it holds), False (it does not), None (the interval cannot tell)."""


def beyond(interval: Interval, line: float = 0.0) -> Outcome:
    """Whether ``interval`` lies wholly above ``line`` (True), wholly below it (False), or straddles it (None).

    The part "A is better than B" with ``interval`` the paired difference A - B, for example.
    """
    return True if interval.above(line) else False if interval.below(line) else None


def within(interval: Interval, margin: float, centre: float = 0.0) -> Outcome:
    """A tie as an equivalence test: True if ``interval`` lies inside ``centre ± margin``, False if it lies
    wholly outside that band, None if it overlaps its edge (too wide to call a tie or a difference)."""
    if centre - margin <= interval.low and interval.high <= centre + margin:
        return True
    return False if interval.low > centre + margin or interval.high < centre - margin else None


def _check_outcomes(outcomes: Iterable[object], what: str, given: object) -> None:
    """Refuse anything but True, False and None among ``outcomes``, naming ``what`` and showing ``given``."""
    if any(outcome not in (True, False, None) for outcome in outcomes):
        raise ValueError(f"{what} must be True, False or None (undecided), got {given}")


def every(outcomes: Iterable[Outcome]) -> Outcome:
    """One part measured against several cases, e.g. "beats every baseline": False if any case was decided
    against, True if every case holds, None (undecided) if none failed but some could not be decided."""
    outcomes = list(outcomes)
    if not outcomes:
        raise ValueError("every() needs at least one outcome: with no cases there is nothing to decide")
    _check_outcomes(outcomes, "outcomes", outcomes)
    return False if False in outcomes else True if all(outcomes) else None


def decide(parts: Mapping[str, Outcome]) -> str:
    """The verdict of a claim from its parts, by one rule for every chapter.

    ``holds`` when every part holds; ``does not hold`` when none does and at least one was
    decided against (a part that fails sinks the claim even if another could not be decided);
    ``partly`` when decided parts disagree; ``undecided`` when no part failed but at least one
    could not be decided.
    """
    if not parts:
        raise ValueError("a claim needs at least one measured part")
    outcomes = set(parts.values())
    _check_outcomes(outcomes, "parts", parts)
    if {True, False} <= outcomes:
        return "partly"
    if False in outcomes:
        return "does not hold"
    return "holds" if outcomes == {True} else "undecided"


OUTCOME_WORDS: dict[Outcome, str] = {True: "yes", False: "no", None: "undecided"}
"""A part's outcome in words, as :func:`parts_text` and the chapters' tables write it."""


def parts_text(parts: Mapping[str, Outcome]) -> str:
    """The parts of a claim and their outcomes in words, for a verdict's ``why``: ``"a: yes; b: undecided"``."""
    return "; ".join(f"{part}: {OUTCOME_WORDS[outcome]}" for part, outcome in parts.items())


def save_chapter_results(folder: str | os.PathLike, chapter: str, verdicts: list[ClaimVerdict],
                         numbers: dict[str, Any], *, run: dict[str, Any] | None = None,
                         file_name: str | None = None) -> Path:
    """Write ``folder/<chapter>.json`` (or ``folder/<file_name>``) atomically with the chapter's verdicts and
    key numbers, and ``run``, what the run was (:class:`streamline_lib.book.runs.ChapterRun`); returns the path."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    file = path / (file_name or f"{chapter}.json")
    document = {"chapter": chapter, "verdicts": [asdict(v) for v in verdicts], "numbers": numbers}
    if run is not None:
        document["run"] = run
    return atomic_write_text(file, json.dumps(document, indent=1, ensure_ascii=False, default=float) + "\n")


def load_chapter_results(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every chapter's saved results in ``folder``, by chapter name (empty when none were saved).

    A file is keyed by its ``chapter`` field, so a runs folder (:mod:`streamline_lib.book.runs`), which
    may hold several runs of one chapter, reads too: there the newest file stands for its chapter.
    """
    files = sorted((f for f in Path(folder).glob("*.json") if not f.name.startswith(TEMPORARY_PREFIX)),
                   key=lambda f: (f.stat().st_mtime_ns, f.name))
    documents = (json.loads(file.read_text(encoding="utf-8")) for file in files)
    return dict(sorted({document["chapter"]: document for document in documents}.items()))


def _claim_order(claim: str) -> tuple[int, int]:
    """LLM-Streamline's claims first, then each peer's; by number within a paper (C2 before C10)."""
    return list(PAPERS).index(claim[0]), int(claim[1:])


def ledger(folder: str | os.PathLike) -> pandas.DataFrame:
    """One row per claim verdict saved in ``folder``, ordered by claim, with its chapter."""
    rows = [
        {"chapter": chapter, **verdict}
        for chapter, document in load_chapter_results(folder).items()
        for verdict in document["verdicts"]
    ]
    columns = ["claim", "statement", "paper", "paper_source", "ours", "verdict", "why", "chapter"]
    table = pandas.DataFrame(rows, columns=columns)
    order = sorted(range(len(table)), key=lambda i: (_claim_order(table["claim"][i]), table["chapter"][i]))
    return table.iloc[order].reset_index(drop=True)


def ledger_by_model(folders: Mapping[str, str | os.PathLike]) -> pandas.DataFrame:
    """One row per claim checked on any model, with each model's result and verdict side by side.

    ``folders`` maps a model's name (the column label) to the folder its chapters saved their
    results to. The claim's statement, the paper's number and the chapter come from the first
    model that checked it; per model, ``<model>: ours`` and ``<model>: verdict`` (:data:`NOT_RUN`
    where that model's folder holds no verdict for the claim) and ``<model>: why``.
    """
    tables = {name: ledger(folder).drop_duplicates("claim").set_index("claim") for name, folder in folders.items()}
    claims = sorted({claim for table in tables.values() for claim in table.index}, key=_claim_order)
    shared = ["statement", "paper", "paper_source", "chapter"]
    rows = []
    for claim in claims:
        first = next(table.loc[claim] for table in tables.values() if claim in table.index)
        row = {"claim": claim, **{column: first[column] for column in shared}}
        for name, table in tables.items():
            found = claim in table.index
            row[f"{name}: ours"] = table.loc[claim, "ours"] if found else ""
            row[f"{name}: verdict"] = table.loc[claim, "verdict"] if found else NOT_RUN
            row[f"{name}: why"] = table.loc[claim, "why"] if found else ""
        rows.append(row)
    columns = ["claim", *shared] + [f"{name}: {part}" for name in folders for part in ("ours", "verdict", "why")]
    return pandas.DataFrame(rows, columns=columns)


RETENTION_MEASURES: tuple[str, ...] = ("removed (all parameters)", "panel retention", "panel above-chance retention",
                                       "8 tasks retention")
"""What :func:`retention_by_model` reads from a row of the sparsity chapter's saved sweep."""


def retention_by_model(folders: Mapping[str, str | os.PathLike], *, chapter: str = "05_sparsity",
                       variant: str = "layer", target: float = 0.25) -> pandas.DataFrame:
    """How much of the dense model's accuracy ``variant`` keeps at sparsity ``target``, one row per run.

    ``folders`` maps a run's name to its results folder, as for :func:`ledger_by_model`; the
    numbers are :data:`RETENTION_MEASURES` from the row of ``chapter``'s saved ``sweep`` with that
    variant and target: the retention on the headroom panel, plain and above chance, beside the
    paper's eight-task average. A run whose chapter saved no such row is left out (an earlier
    layout, or a sparsity it could not run).
    """
    rows = {}
    for name, folder in folders.items():
        document = load_chapter_results(folder).get(chapter, {})
        found = [row for row in document.get("numbers", {}).get("sweep", [])
                 if row.get("variant") == variant and row.get("target") == target
                 and all(measure in row for measure in RETENTION_MEASURES)]
        if found:
            rows[name] = {measure: found[0][measure] for measure in RETENTION_MEASURES}
    return pandas.DataFrame.from_dict(rows, orient="index", columns=list(RETENTION_MEASURES))
