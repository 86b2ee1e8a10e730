"""Moved to :mod:`streamline_lib.methods.pruning`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .methods import pruning

sys.modules[__name__] = pruning
