"""Progress bars for the long loops (scoring, training, evaluation).

``tqdm.auto`` draws a widget in JupyterLab and text in a terminal. Setting
``TQDM_DISABLE=1`` in the environment turns every bar off; the book build does
that, so the rendered pages show results rather than frozen bars.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

__all__ = ["progress_bar"]


def progress_bar(iterable: Iterable[T], desc: str, enabled: bool = True, **kwargs) -> Iterable[T]:
    """``iterable`` wrapped in a bar labelled ``desc``, or unchanged when not ``enabled``."""
    # Only pass tqdm's own defaults through, so TQDM_DISABLE in the environment still applies.
    return tqdm(iterable, desc=desc, **kwargs) if enabled else iterable
