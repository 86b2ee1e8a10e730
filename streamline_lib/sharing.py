"""Moved to :mod:`streamline_lib.methods.sharing`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .methods import sharing

sys.modules[__name__] = sharing
