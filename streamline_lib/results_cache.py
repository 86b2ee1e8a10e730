"""Moved to :mod:`streamline_lib.core.results_cache`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .core import results_cache

sys.modules[__name__] = results_cache
