"""Moved to :mod:`streamline_lib.methods.linear_replacement`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .methods import linear_replacement

sys.modules[__name__] = linear_replacement
