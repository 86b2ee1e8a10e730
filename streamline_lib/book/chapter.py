"""What every chapter sets up first: its run profile, its text and where its results go.

A chapter runs in one of three :data:`PROFILES`:

* ``"book"``: the committed run, with the sizes the book's text describes; it writes the
  chapter's verdicts into the results folder the ledger reads;
* ``"workshop"``: the same steps sized for a 2-core laptop with cold caches (a few
  minutes a chapter), large enough to show the chapter's lesson but not to decide
  its claims; it writes beside the book's results, never over them;
* ``"smoke"``: the smallest run that executes every cell (the test suite's), also
  written beside the book's results.

:func:`chapter_data` builds the token windows a chapter calibrates, trains and measures
on (Wikipedia by default) in one call, so that the chapters agree on them and say the
same thing when a corpus holds fewer windows than asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from ..data.text_data import available_sequences, token_sequences
from ..data.zero_shot_tasks import EVAL_SET, Limit

__all__ = ["PROFILES", "check_profile", "results_folder", "ChapterData", "chapter_data"]

PROFILES: tuple[str, ...] = ("book", "workshop", "smoke")
"""A chapter's run profiles (see the module docstring); ``"book"`` is the committed run."""


def check_profile(profile: str) -> None:
    """Refuse a ``profile`` that is not one of :data:`PROFILES`."""
    if profile not in PROFILES:
        raise ValueError(f"PROFILE = {profile!r} is not a run profile; use one of {', '.join(map(repr, PROFILES))}")


def results_folder(results_dir: str | os.PathLike, profile: str) -> Path:
    """Where a chapter run in ``profile`` saves its results: ``results_dir`` itself only for ``"book"``.

    A workshop or smoke run writes into ``results_dir/<profile>``, so that it never
    replaces the results the book shows.
    """
    check_profile(profile)
    folder = Path(results_dir)
    return folder if profile == "book" else folder / profile


@dataclass(frozen=True)
class ChapterData:
    """A chapter's token windows and evaluation items; see :func:`chapter_data`."""

    calibration: torch.Tensor  # (sequences, tokens): chooses the layers
    train: torch.Tensor | None  # (sequences, tokens): trains replacements and heals; None when not asked for
    heldout: torch.Tensor  # (sequences, tokens): perplexity and the distance from the dense model
    eval_set: Limit  # the zero-shot items, the same for every model of the chapter
    notes: tuple[str, ...]  # what differs from what was asked for, e.g. fewer training windows

    def describe(self) -> str:
        """One line per set: its shape in windows and tokens, then any notes."""
        def shape(tokens: torch.Tensor) -> str:
            return f"{tokens.shape[0]} x {tokens.shape[1]} tokens ({tokens.numel():,})"

        lines = [f"calibration: {shape(self.calibration)}"]
        if self.train is not None:
            lines.append(f"training: {shape(self.train)}")
        lines.append(f"held-out: {shape(self.heldout)}")
        items = ("the book's evaluation set" if self.eval_set is EVAL_SET else f"limit {self.eval_set!r}")
        lines.append(f"zero-shot items: {items}")
        return "\n".join(lines + list(self.notes))


def chapter_data(tokenizer: PreTrainedTokenizerBase, *, seq_len: int, calibration_seqs: int, heldout_seqs: int,
                 train_seqs: int = 0, limit: Limit = None, seed: int = 0,
                 calibration_corpus: str = "wiki", max_length: int | None = None) -> ChapterData:
    """The token windows a chapter needs, from the bundled corpora's separate splits.

    Calibration windows come from ``calibration_corpus``'s calibration split, training
    windows (``train_seqs`` > 0) and held-out windows from Wikipedia's train and heldout
    splits, all ``seq_len`` tokens long and drawn with ``seed``. A tokenizer with a large
    vocabulary cuts the same text into fewer tokens: when the train split holds fewer
    than ``train_seqs`` windows, all of them are used and :attr:`ChapterData.notes` says
    so. ``limit=None`` evaluates on the book's shared set
    (:data:`~streamline_lib.data.zero_shot_tasks.EVAL_SET`); anything else is passed to
    :func:`~streamline_lib.evaluation.zero_shot.evaluate_zero_shot` as its ``limit``.
    """
    if train_seqs < 0:
        raise ValueError(f"train_seqs={train_seqs} must be >= 0 (0: no training windows)")
    windows = dict(seq_len=seq_len, seed=seed, max_length=max_length)
    calibration = token_sequences(tokenizer, calibration_corpus, "calibration", num_seqs=calibration_seqs, **windows)
    heldout = token_sequences(tokenizer, "wiki", "heldout", num_seqs=heldout_seqs, **windows)
    notes: list[str] = []
    train = None
    if train_seqs:
        available = available_sequences(tokenizer, "wiki", "train", seq_len)
        if available < train_seqs:
            notes.append(f"the Wikipedia train split holds {available} windows of {seq_len} tokens for this "
                         f"tokenizer: training on all of them ({available * seq_len:,} tokens), not {train_seqs}")
        train = token_sequences(tokenizer, "wiki", "train", num_seqs=min(train_seqs, available), **windows)
    return ChapterData(calibration, train, heldout, EVAL_SET if limit is None else limit, tuple(notes))
