"""What every chapter sets up first: its run profile, its text and where its results go.

A chapter runs in one of three :data:`PROFILES`:

* ``"book"``: the committed run, with the sizes the book's text describes;
* ``"workshop"``: the same steps sized for a 2-core laptop with cold caches (a few
  minutes a chapter), large enough to show the chapter's lesson but not to decide
  its claims;
* ``"smoke"``: the smallest run that executes every cell (the test suite's).

Where each run's results go, so that none replaces the book's, is
:mod:`streamline_lib.book.runs`'s job.

:func:`chapter_data` builds the token windows a chapter calibrates, trains and measures
on (Wikipedia by default) in one call, so that the chapters agree on them and say the
same thing when a corpus holds fewer windows than asked for. :func:`measure` takes every
measure the book reports of a model in one call: held-out perplexity, zero-shot accuracy
on the paper's eight tasks and on the headroom panel (the tasks the dense model answers
well above chance, where a difference between pruned models can show), and, for a
pruned model, its distance from the dense one (KL divergence and same-top-token rate)
and the panel answers it flipped. :func:`measures_table` puts them side by side.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import pandas
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.text_data import available_sequences, token_sequences
from ..data.zero_shot_tasks import EVAL_SET, HEADROOM_SET, HEADROOM_TASKS, Limit
from ..evaluation.distance import Distance, Flips, distance_from_dense, flips
from ..evaluation.held_out import perplexity
from ..evaluation.statistics import compare
from ..evaluation.zero_shot import ZeroShotResult, evaluate_zero_shot

__all__ = ["PROFILES", "check_profile", "ChapterData", "chapter_data", "Measured", "measure",
           "measures_table"]

PROFILES: tuple[str, ...] = ("book", "workshop", "smoke")
"""A chapter's run profiles (see the module docstring); ``"book"`` is the committed run."""


def check_profile(profile: str) -> None:
    """Refuse a ``profile`` that is not one of :data:`PROFILES`."""
    if profile not in PROFILES:
        raise ValueError(f"PROFILE = {profile!r} is not a run profile; use one of {', '.join(map(repr, PROFILES))}")


@dataclass(frozen=True)
class ChapterData:
    """A chapter's token windows and evaluation items; see :func:`chapter_data`."""

    calibration: torch.Tensor  # (sequences, tokens): chooses the layers
    train: torch.Tensor | None  # (sequences, tokens): trains replacements and heals; None when not asked for
    heldout: torch.Tensor  # (sequences, tokens): perplexity and the distance from the dense model
    eval_set: Limit  # the paper's eight tasks' items, the same for every model of the chapter
    panel_set: Limit  # the headroom panel's items (HEADROOM_TASKS), the same for every model
    notes: tuple[str, ...]  # what differs from what was asked for, e.g. fewer training windows
    seed: int = 0  # the seed of the windows and of the zero-shot samples

    def describe(self) -> str:
        """One line per set: its shape in windows and tokens, then any notes."""
        def shape(tokens: torch.Tensor) -> str:
            return f"{tokens.shape[0]} x {tokens.shape[1]} tokens ({tokens.numel():,})"

        lines = [f"calibration: {shape(self.calibration)}"]
        if self.train is not None:
            lines.append(f"training: {shape(self.train)}")
        lines.append(f"held-out: {shape(self.heldout)}")
        paper = "the book's evaluation set" if self.eval_set is EVAL_SET else f"limit {self.eval_set!r}"
        panel = "the book's headroom panel" if self.panel_set is HEADROOM_SET else f"limit {self.panel_set!r}"
        lines.append(f"zero-shot items: the paper's eight tasks: {paper}; headroom tasks: {panel}")
        return "\n".join(lines + list(self.notes))


def chapter_data(tokenizer: PreTrainedTokenizerBase, *, seq_len: int, calibration_seqs: int, heldout_seqs: int,
                 train_seqs: int = 0, limit: Limit = None, panel_limit: Limit = None, seed: int = 0,
                 calibration_corpus: str = "wiki", max_length: int | None = None) -> ChapterData:
    """The token windows a chapter needs, from the bundled corpora's separate splits.

    Calibration windows come from ``calibration_corpus``'s calibration split, training
    windows (``train_seqs`` > 0) and held-out windows from Wikipedia's train and heldout
    splits, all ``seq_len`` tokens long and drawn with ``seed``. A tokenizer with a large
    vocabulary cuts the same text into fewer tokens: when the train split holds fewer
    than ``train_seqs`` windows, all of them are used and :attr:`ChapterData.notes` says
    so. ``limit=None`` evaluates the paper's eight tasks on the book's shared set
    (:data:`~streamline_lib.data.zero_shot_tasks.EVAL_SET`) and ``panel_limit=None`` the headroom
    tasks on :data:`~streamline_lib.data.zero_shot_tasks.HEADROOM_SET`; anything else is passed to
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
    return ChapterData(calibration, train, heldout, EVAL_SET if limit is None else limit,
                       HEADROOM_SET if panel_limit is None else panel_limit, tuple(notes), seed)


@dataclass(frozen=True)
class Measured:
    """What the book measures of one model; see :func:`measure`."""

    perplexity: float  # on the held-out windows
    paper: ZeroShotResult  # the paper's eight tasks
    panel: ZeroShotResult  # the headroom panel
    distance: Distance | None = None  # from the dense model (None for the dense model itself)
    flips: Flips | None = None  # the panel answers changed against the dense model's


def measure(model: nn.Module, tokenizer: PreTrainedTokenizerBase, data: ChapterData, *,
            dense: tuple[nn.Module, Measured] | None = None, prompt_nll: bool = False,
            cache: bool | str | os.PathLike = True, progress: bool = True) -> Measured:
    """Held-out perplexity and zero-shot accuracy of ``model``, and its distance from the dense model.

    ``dense`` is the dense model and its own :class:`Measured` (from a call without
    ``dense``); with it the result also holds the KL divergence from the dense model on the
    held-out windows and the panel answers that changed. ``prompt_nll`` records the dense
    model's whole-prompt NLLs on the paper's tasks, which the authors' stability weights
    need. ``cache`` is passed on (default True: a chapter's re-run measures nothing twice).
    """
    zero_shot = dict(seed=data.seed, cache=cache, progress=progress)
    paper = evaluate_zero_shot(model, tokenizer, limit=data.eval_set, prompt_nll=prompt_nll, **zero_shot)
    panel = evaluate_zero_shot(model, tokenizer, tasks=HEADROOM_TASKS, limit=data.panel_set, **zero_shot)
    measured = Measured(perplexity(model, data.heldout, progress=progress), paper, panel)
    if dense is None:
        return measured
    dense_model, dense_measured = dense
    return Measured(measured.perplexity, paper, panel,
                    distance_from_dense(dense_model, model, data.heldout, progress=progress, cache=cache),
                    flips(panel, dense_measured.panel))


def measures_table(measured: Mapping[str, Measured], reference: str = "dense") -> pandas.DataFrame:
    """One row per model: perplexity, both accuracies, the panel's paired difference from ``reference``,
    and the distance from the dense model with intervals (as text), for a chapter to show."""
    base = measured[reference]
    rows = {}
    for name, m in measured.items():
        row = {"held-out perplexity": round(m.perplexity, 2), "paper's 8 tasks: acc": round(m.paper.average_acc, 3),
               "panel: acc": round(m.panel.average_acc, 3)}
        row[f"panel minus {reference} [95%]"] = "" if name == reference else str(compare(m.panel, base.panel).difference)
        if m.distance is not None:
            row["KL from dense [95%]"] = f"{m.distance.mean_kl:.3f}"
            row["same top token [95%]"] = f"{m.distance.same_top:.3f}"
        if m.flips is not None:
            row["panel answers changed [95%]"] = f"{m.flips.changed_share:.3f}"
        rows[name] = row
    return pandas.DataFrame.from_dict(rows, orient="index").fillna("")
