"""Measure inference speed: tokens per second of a forward pass (prefill)."""

from __future__ import annotations

import time

import torch
from torch import nn

__all__ = ["prefill_tokens_per_second"]


@torch.inference_mode()
def prefill_tokens_per_second(
    model: nn.Module, sequences: torch.Tensor, batch_size: int = 8, warmup: int = 1, repeats: int = 3
) -> float:
    """Tokens per second of a full forward pass over ``sequences`` (num_seqs, seq_len).

    Runs ``warmup`` untimed batches first (kernel selection, allocator), then times
    ``repeats`` passes over all sequences and reports the best, the figure least
    disturbed by other work on the machine.
    """
    device = next(model.parameters()).device
    batches = [b.to(device) for b in sequences.split(batch_size)]
    for batch in batches[:warmup]:
        model(input_ids=batch, use_cache=False)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in batches:
            model(input_ids=batch, use_cache=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return sequences.numel() / best
