"""Moved to :mod:`streamline_lib.methods.training`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .methods import training

sys.modules[__name__] = training
