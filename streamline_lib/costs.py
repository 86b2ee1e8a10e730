"""Moved to :mod:`streamline_lib.methods.costs`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .methods import costs

sys.modules[__name__] = costs
