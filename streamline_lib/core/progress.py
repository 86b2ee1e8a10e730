"""Progress bars for the long loops (scoring, training, evaluation).

``tqdm.auto`` draws a widget in JupyterLab and text in a terminal. Setting
``TQDM_DISABLE=1`` in the environment turns every bar off; the book build does
that, so the rendered pages show results rather than frozen bars.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

__all__ = ["progress_bar"]


def bars_disabled() -> bool:
    """Whether ``TQDM_DISABLE`` is set to a true value in the environment."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def progress_bar(iterable: Iterable[T], desc: str, enabled: bool = True, **kwargs) -> Iterable[T]:
    """``iterable`` wrapped in a bar labelled ``desc``, or unchanged when not ``enabled``.

    ``TQDM_DISABLE`` is read here rather than left to tqdm: tqdm's notebook bar (what
    ``tqdm.auto`` picks in a kernel) ignores the variable and draws a widget anyway.
    """
    return tqdm(iterable, desc=desc, **kwargs) if enabled and not bars_disabled() else iterable
