"""Measure a (pruned) model: perplexity, zero-shot and generative accuracy, intervals, distance, stability, speed.

Perplexity is in :mod:`~streamline_lib.evaluation.held_out`; zero-shot multiple-choice accuracy
(lm-eval's ``acc`` / ``acc_norm``, cached on disk with ``cache``) in :mod:`~streamline_lib.evaluation.zero_shot`;
a pruned model's KL divergence from the dense one and its answer flips in
:mod:`~streamline_lib.evaluation.distance`. Their main entry points are re-exported here so that one import
serves all three. Importing it also registers the last-word scorer (LAMBADA) with
:func:`~streamline_lib.evaluation.zero_shot.evaluate_zero_shot`.
"""

from . import last_word  # noqa: F401  (registers LAMBADA's evaluator in zero_shot.TASK_EVALUATORS)
from .distance import Distance, Flips, distance_from_dense, flips
from .held_out import perplexity
from .zero_shot import (
                        ItemResult,
                        RetentionUndefinedWarning,
                        TaskResult,
                        ZeroShotResult,
                        above_chance_retention,
                        evaluate_zero_shot,
                        results_table,
                        retention,
)

__all__ = ["perplexity", "evaluate_zero_shot", "ZeroShotResult", "TaskResult", "ItemResult", "retention",
           "above_chance_retention", "RetentionUndefinedWarning", "results_table", "distance_from_dense", "Distance",
           "flips", "Flips"]
