"""Moved to :mod:`streamline_lib.core.progress`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .core import progress

sys.modules[__name__] = progress
