"""Moved to :mod:`streamline_lib.data.zero_shot_tasks`; this old path is the same module until the notebooks move (issue 22)."""
import sys

from .data import zero_shot_tasks

sys.modules[__name__] = zero_shot_tasks
