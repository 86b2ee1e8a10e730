"""Measure inference speed: tokens per second of prefill (one forward pass over a prompt)
and of decoding (one new token at a time with the KV cache, as ``generate`` does).

A CPU timing moves by several percent from run to run (other work, frequency, caches), so a
claim about a speed-up is judged with :func:`compare_prefill_speed` and :func:`compare_decode_speed`:
the models are timed in interleaved rounds, and each model's speed relative to a reference gets an
interval. Interleaving cancels a slow spell that slows every model alike; it cannot cancel work
that slows the models *unequally*. Other processes on the cores are such work when torch runs
several threads: a decoder layer is dozens of small parallel operations (norms, rotary embeddings,
activations, small matrix products), each ending at a barrier that waits for a thread whose core
was taken, while the LM head is one large matrix product. On SmolLM2-135M (bfloat16, prefill of
8 x 256 tokens, 2 cores shared with two busy processes) 2 threads made the 30 layers 3.4x slower
than 1 thread but the LM head only 1.25x, so removing layers looked better than its share of the
work: 2.2-2.7x for 19 of 30 layers removed, whose ideal is 1.90-2.02x (by parameters, or by
FLOPs with attention and the LM head), against 1.9-2.1x with one thread.
:class:`SpeedRounds` therefore records the thread count and the machine's load; a load above
the cores means such a ratio is biased upward (time with ``torch.set_num_threads(1)``, or on an
idle machine).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .statistics import Interval, mean_interval

__all__ = ["prefill_tokens_per_second", "decode_tokens_per_second", "SpeedRounds", "compare_prefill_speed",
           "compare_decode_speed"]


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


@dataclass(frozen=True)
class SpeedRounds:
    """Prefill or decoding speeds of several models, one per model and round (tokens per second)."""

    tokens_per_second: dict[str, list[float]]
    threads: int | None = None  # torch's intra-op threads during the rounds
    # The machine's 1-minute load average after the rounds (os.getloadavg; None where unavailable),
    # and its logical cores: a load above the cores means other work shared them (see the module docstring).
    load_average: float | None = None
    cores: int | None = None

    @property
    def contended(self) -> bool | None:
        """Whether the load exceeded the cores (other work competed), or None if either is unknown."""
        if self.load_average is None or self.cores is None:
            return None
        return self.load_average > self.cores

    def ratios(self, name: str, reference: str) -> np.ndarray:
        """``name``'s speed over ``reference``'s, round by round (paired: the same moment of the machine)."""
        return np.array(self.tokens_per_second[name]) / np.array(self.tokens_per_second[reference])

    def ratio_interval(self, name: str, reference: str, level: float = 0.95) -> Interval:
        """The mean of :meth:`ratios` with a bootstrap interval over the rounds."""
        return mean_interval(self.ratios(name, reference), level=level)


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def _interleaved(models: Mapping[str, nn.Module], measure: Callable[[nn.Module, int], float],
                 rounds: int) -> SpeedRounds:
    """``measure(model, warmup)`` of every model once with a warm-up, then once per model per round, in turn."""
    if rounds < 2:
        raise ValueError(f"rounds={rounds}: an interval needs at least 2 rounds")
    for model in models.values():
        measure(model, 1)
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            speeds[name].append(measure(model, 0))
    return SpeedRounds(speeds, torch.get_num_threads(), _load_average(), os.cpu_count())


def compare_prefill_speed(models: Mapping[str, nn.Module], sequences: torch.Tensor, batch_size: int = 8,
                          rounds: int = 9) -> SpeedRounds:
    """Prefill speed of each of ``models`` on ``sequences`` in ``rounds`` interleaved rounds.

    As :func:`compare_decode_speed`, with one timed :func:`prefill_tokens_per_second` pass over
    all ``sequences`` per model per round (after one warm-up pass each). Judge a speed-up by
    :meth:`SpeedRounds.ratio_interval`, and check :attr:`SpeedRounds.contended`.
    """
    return _interleaved(models, lambda model, warmup: prefill_tokens_per_second(
        model, sequences, batch_size, warmup=len(sequences) if warmup else 0, repeats=1), rounds)


def compare_decode_speed(models: Mapping[str, nn.Module], prompts: torch.Tensor, new_tokens: int = 32,
                         rounds: int = 9) -> SpeedRounds:
    """Greedy decoding speed of each of ``models`` in ``rounds`` interleaved rounds.

    Every model is warmed up once; then each round times every model once, in turn
    (:func:`decode_tokens_per_second` with one run), so a slow spell of the machine slows all
    models of that round alike and the per-round ratios cancel it. Use the spread of the
    ratios (:meth:`SpeedRounds.ratio_interval`) to tell a speed-up from timing noise.
    """
    return _interleaved(models, lambda model, warmup: decode_tokens_per_second(
        model, prompts, new_tokens, warmup=warmup, repeats=1), rounds)
