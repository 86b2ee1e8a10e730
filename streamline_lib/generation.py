"""Moved to :mod:`streamline_lib.evaluation.generation`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .evaluation import generation

sys.modules[__name__] = generation
