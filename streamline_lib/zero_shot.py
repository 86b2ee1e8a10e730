"""Moved to :mod:`streamline_lib.evaluation.zero_shot`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .evaluation import zero_shot

sys.modules[__name__] = zero_shot
