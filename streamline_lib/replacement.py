"""Moved to :mod:`streamline_lib.methods.replacement`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .methods import replacement

sys.modules[__name__] = replacement
