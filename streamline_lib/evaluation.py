"""Evaluate a (pruned) model: perplexity on held-out text, and zero-shot accuracy.

Perplexity is computed here. Zero-shot multiple-choice accuracy (lm-eval's
``acc`` / ``acc_norm``, cached on disk) lives in :mod:`streamline_lib.zero_shot`;
its main entry points are re-exported so that one import serves both.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .progress import progress_bar
from .text_data import check_token_ids
from .zero_shot import (
    ItemResult,
    TaskResult,
    ZeroShotResult,
    above_chance_retention,
    evaluate_zero_shot,
    results_table,
    retention,
)

__all__ = [
    "perplexity",
    "evaluate_zero_shot",
    "ZeroShotResult",
    "TaskResult",
    "ItemResult",
    "retention",
    "above_chance_retention",
    "results_table",
]


@torch.inference_mode()
def perplexity(model: nn.Module, sequences: torch.Tensor, batch_size: int = 8, progress: bool = True) -> float:
    """Perplexity of ``model`` on fixed-length token sequences ``(num_seqs, seq_len)``.

    Every sequence is scored on its own (no context carried over), the loss is the
    mean next-token cross-entropy over all predicted tokens, computed in float32.
    """
    if sequences.ndim != 2 or sequences.shape[1] < 2:
        raise ValueError(f"sequences must have shape (num_seqs, seq_len >= 2), got {tuple(sequences.shape)}")
    check_token_ids(model, sequences)
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    for batch in progress_bar(sequences.split(batch_size), "perplexity", enabled=progress):
        batch = batch.to(device)
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()  # (batch, seq-1, vocab)
        targets = batch[:, 1:]
        nll = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum")
        total_nll += nll.item()
        total_tokens += targets.numel()
    return math.exp(total_nll / total_tokens)
