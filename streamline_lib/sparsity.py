"""Moved to :mod:`streamline_lib.methods.sparsity`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .methods import sparsity

sys.modules[__name__] = sparsity
