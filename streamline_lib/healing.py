"""Moved to :mod:`streamline_lib.methods.healing`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .methods import healing

sys.modules[__name__] = healing
