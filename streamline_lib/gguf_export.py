"""Moved to :mod:`streamline_lib.export.gguf`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .export import gguf

sys.modules[__name__] = gguf
