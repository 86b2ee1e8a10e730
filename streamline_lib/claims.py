"""Moved to :mod:`streamline_lib.book.claims`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .book import claims

sys.modules[__name__] = claims
