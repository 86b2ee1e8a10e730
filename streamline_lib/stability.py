"""Moved to :mod:`streamline_lib.evaluation.stability`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .evaluation import stability

sys.modules[__name__] = stability
