"""Moved to :mod:`streamline_lib.evaluation.speed`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .evaluation import speed

sys.modules[__name__] = speed
