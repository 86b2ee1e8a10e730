"""Moved to :mod:`streamline_lib.data.assets`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .data import assets

sys.modules[__name__] = assets
