"""Moved to :mod:`streamline_lib.methods.trained_cache`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .methods import trained_cache

sys.modules[__name__] = trained_cache
