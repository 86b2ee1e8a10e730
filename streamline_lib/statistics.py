"""Moved to :mod:`streamline_lib.evaluation.statistics`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .evaluation import statistics

sys.modules[__name__] = statistics
