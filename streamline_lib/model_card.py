"""Moved to :mod:`streamline_lib.export.model_card`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .export import model_card

sys.modules[__name__] = model_card
