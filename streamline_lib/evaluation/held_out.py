"""Perplexity of a (pruned) model on held-out text: exp of the mean next-token loss over every predicted token."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..core.progress import progress_bar
from ..data.text_data import check_token_ids

__all__ = ["perplexity", "check_windows"]


@torch.inference_mode()
def perplexity(model: nn.Module, sequences: torch.Tensor, batch_size: int = 8, progress: bool = True) -> float:
    """Perplexity of ``model`` on fixed-length token sequences ``(num_seqs, seq_len)``.

    Every sequence is scored on its own (no context carried over), the loss is the
    mean next-token cross-entropy over all predicted tokens, computed in float32.
    """
    check_windows(model, sequences)
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


def check_windows(model: nn.Module, sequences: torch.Tensor) -> None:
    """Refuse anything but token windows ``(num_seqs >= 1, seq_len >= 2)`` of ``model``'s vocabulary."""
    if sequences.ndim != 2 or sequences.shape[0] < 1 or sequences.shape[1] < 2:
        raise ValueError(f"sequences must have shape (num_seqs, seq_len) with num_seqs >= 1 and seq_len >= 2, "
                         f"got {tuple(sequences.shape)}")
    check_token_ids(model, sequences)
