"""Moved to :mod:`streamline_lib.architecture.layers`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .architecture import layers

sys.modules[__name__] = layers
