"""Moved to :mod:`streamline_lib.data.text_data`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .data import text_data

sys.modules[__name__] = text_data
