"""Moved to :mod:`streamline_lib.methods.scoring`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .methods import scoring

sys.modules[__name__] = scoring
