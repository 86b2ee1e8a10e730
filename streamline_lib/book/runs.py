"""Where a chapter run keeps its results, so that no reader's run replaces the book's own.

The ledger shows the book's committed run: each chapter's ``notebooks/results/<chapter>.json``.
Only a run that asks for it writes there: ``make reproduce`` passes ``PROFILE = "book"`` and
``RESULTS_DIR = "results"`` (and the other runs ``results/<model>`` and the like). Every other
run, an exercise, a workshop or smoke run, another model, leaves ``RESULTS_DIR = None`` and saves
to ``runs/<profile>-<model>-<dtype>/<chapter>-<digest>.json``, the digest of its parameters, with
the parameters inside. Two runs that differ in any parameter that can change a number write two
files; the same run repeated replaces its own file and says so. A workshop or smoke run that names
the book's folder is refused.

A chapter's parameters are the upper-case names its parameters cell defines (``MODEL``,
``SEQ_LEN``, ...), with plain values; :func:`chapter_run` reads them from the notebook's globals.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.loading import resolve_dtype
from .chapter import check_profile
from .claims import ClaimVerdict, save_chapter_results

__all__ = ["BOOK_RESULTS", "RUNS", "PROFILE_READINGS", "run_parameters", "ChapterRun", "chapter_run"]

PROFILE_READINGS: dict[str, str] = {
    "workshop": ("A workshop run: every step of the chapter on smaller sets than the book's. Its numbers show "
                 "the chapter's lesson, which model is farther from the dense one and in which direction each "
                 "comparison goes, but their intervals are too wide to decide a claim: its verdicts will often say "
                 "undecided where the book's decide. The book's verdicts are in the text."),
    "smoke": "A smoke run: the smallest sets that execute every cell. Its numbers mean nothing.",
}
"""What a run of a smaller profile can and cannot show, printed at the top of the chapter by
:meth:`ChapterRun.describe`; the book's own profile needs no such note."""

BOOK_RESULTS = Path("results")
"""The book's own results, relative to ``notebooks/``: what the ledger shows."""
RUNS = Path("runs")
"""Every other run's results, relative to ``notebooks/``, one folder per profile, model and dtype."""

_PLAIN = (str, int, float, bool, type(None))


def _is_plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return isinstance(value, _PLAIN)


def run_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The run's parameters in a notebook's ``namespace``: its upper-case names with plain values, sorted.

    Plain values are strings, numbers, booleans, None, and lists, tuples and dicts of them; a
    module or a tensor bound to an upper-case name is not a parameter.
    """
    return {name: value for name, value in sorted(namespace.items())
            if name.isupper() and not name.startswith("_") and _is_plain(value)}


def _slug(model: str) -> str:
    """A folder-name form of a model name, Hugging Face id or local path (its last part)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model).name or model)


def _digest(parameters: Mapping[str, Any]) -> str:
    text = json.dumps({k: v for k, v in parameters.items() if k != "RESULTS_DIR"}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _inside(folder: Path, parent: Path) -> bool:
    folder, parent = folder.resolve(), parent.resolve()
    return folder == parent or parent in folder.parents


@dataclass(frozen=True)
class ChapterRun:
    """One run of a chapter: its profile, model, the dtype it uses and the file its results go to."""

    chapter: str
    profile: str
    model: str
    dtype: str  # the dtype the run uses: DTYPE = "auto" resolved on this machine
    parameters: dict[str, Any] = field(repr=False)
    file: Path  # where :meth:`save` writes

    def describe(self) -> str:
        """For the top of the chapter: the run, where its results go and, for a smaller profile, what its
        numbers can and cannot show."""
        line = (f"{self.chapter}: profile {self.profile!r}, model {self.model}, {self.dtype}; "
                f"results go to {self.file}")
        return line + (f"\n{PROFILE_READINGS[self.profile]}" if self.profile in PROFILE_READINGS else "")

    def save(self, verdicts: list[ClaimVerdict], numbers: dict[str, Any]) -> None:
        """Write the chapter's verdicts and numbers, with the run's parameters, and print where."""
        replacing = self.file.exists() and not _inside(self.file.parent, BOOK_RESULTS)
        run = {"profile": self.profile, "model": self.model, "dtype": self.dtype, "parameters": self.parameters}
        save_chapter_results(self.file.parent, self.chapter, verdicts, numbers, run=run, file_name=self.file.name)
        print(f"saved {self.file}" + (" (replacing the earlier run with the same parameters)" if replacing else ""))


def chapter_run(chapter: str, namespace: Mapping[str, Any]) -> ChapterRun:
    """The run of ``chapter`` that the notebook's parameters in ``namespace`` describe (see the module docstring).

    Reads ``PROFILE``, ``MODEL``, ``DTYPE``, ``DEVICE`` (default ``"cpu"``) and ``RESULTS_DIR``.
    Refuses an unknown profile, and a workshop or smoke run whose ``RESULTS_DIR`` is the book's folder.
    """
    parameters = run_parameters(namespace)
    missing = [name for name in ("PROFILE", "MODEL", "DTYPE", "RESULTS_DIR") if name not in parameters]
    if missing:
        raise ValueError(f"the notebook defines no {', '.join(missing)}: chapter_run reads its parameters cell")
    profile, model = parameters["PROFILE"], parameters["MODEL"]
    check_profile(profile)
    dtype = str(resolve_dtype(parameters["DTYPE"], parameters.get("DEVICE", "cpu"))).removeprefix("torch.")
    results_dir = parameters["RESULTS_DIR"]
    if results_dir is None:
        folder = RUNS / f"{profile}-{_slug(model)}-{dtype}"
        file = folder / f"{chapter}-{_digest(parameters)}.json"
    else:
        if profile != "book" and _inside(Path(results_dir), BOOK_RESULTS):
            raise ValueError(f"a {profile} run never writes into the book's results ({results_dir}): leave "
                             f"RESULTS_DIR = None and it saves under {RUNS}/")
        file = Path(results_dir) / f"{chapter}.json"
    return ChapterRun(chapter, profile, model, dtype, parameters, file)
