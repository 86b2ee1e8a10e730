"""Measure inference speed: tokens per second of prefill (one forward pass over a prompt)
and of decoding (one new token at a time with the KV cache, as ``generate`` does)."""

from __future__ import annotations

import time

import torch
from torch import nn

__all__ = ["prefill_tokens_per_second", "decode_tokens_per_second"]


def _best_time(run, device: torch.device, repeats: int) -> float:
    """The shortest of ``repeats`` timed calls of ``run``: the one least disturbed by other work."""
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


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

    def run() -> None:
        for batch in batches:
            model(input_ids=batch, use_cache=False)

    return sequences.numel() / _best_time(run, device, repeats)


@torch.inference_mode()
def decode_tokens_per_second(
    model: nn.Module, prompts: torch.Tensor, new_tokens: int = 32, warmup: int = 1, repeats: int = 3
) -> float:
    """New tokens per second of greedy decoding with the KV cache, after a prompt.

    ``prompts`` (batch, prompt_len) are fed once (prefill, not counted), then
    ``new_tokens`` tokens are generated one forward pass at a time; end-of-text never
    stops it, so every run decodes the same number of tokens. This is the paper's
    setting for its speed table (generation, batch of one prompt per row). Best of
    ``repeats``, after ``warmup`` untimed runs.
    """
    if new_tokens < 1:
        raise ValueError(f"new_tokens={new_tokens}: decode at least one token")
    device = next(model.parameters()).device
    prompts = prompts.to(device)
    attention_mask = torch.ones_like(prompts)

    def prefill():
        return model(input_ids=prompts, attention_mask=attention_mask, use_cache=True)

    def decode(prefilled) -> None:
        cache, mask = prefilled.past_key_values, attention_mask
        token = prefilled.logits[:, -1:].argmax(-1)
        for _ in range(new_tokens):
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            out = model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)

    for _ in range(warmup):
        decode(prefill())
    best = float("inf")
    for _ in range(repeats):  # the prefill is outside the timed part
        prefilled = prefill()
        best = min(best, _best_time(lambda: decode(prefilled), device, 1))
    return prompts.shape[0] * new_tokens / best
