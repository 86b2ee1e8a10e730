"""Moved to :mod:`streamline_lib.architecture.hidden_states`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .architecture import hidden_states

sys.modules[__name__] = hidden_states
