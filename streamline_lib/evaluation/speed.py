"""Measure inference speed: tokens per second of prefill (one forward pass over a prompt)
and of decoding (one new token at a time with the KV cache, as ``generate`` does).

A CPU timing moves by several percent from run to run (other work, frequency, caches), so a
claim about a speed-up is judged with :func:`compare_prefill_speed` and :func:`compare_decode_speed`:
the models are timed in interleaved rounds, and each model's speed relative to a reference gets an
interval. Interleaving cancels a slow spell that slows every model alike; it cannot cancel work
that slows the models *unequally*. Other processes on the cores are such work when torch runs
several threads: a decoder layer is dozens of small parallel operations (norms, rotary embeddings,
activations, small matrix products), each ending at an OpenMP barrier, and with a core taken by
another process the threads spin there waiting for a partner that is not running, while the LM
head is one large matrix product with few barriers. On SmolLM2-135M (bfloat16, prefill of 8 x 256
tokens, 2 cores shared with other busy processes) 2 threads took 9.4 s for the dense model against
1.5 s of CPU time with 1 thread, but the LM head stayed at 0.27-0.42 s, so removing layers looked
better than its share of the work: 2.36x [2.30, 2.41] for 19 of 30 layers replaced by one
(12 left) and 2.50x for 19 removed, whose ideals are 1.90x and 2.00x by parameters (1.92x and
2.02x by FLOPs with causal attention and the LM head); 1 thread gave 1.88-1.92x and 2.06-2.14x,
and 2 threads with ``OMP_WAIT_POLICY=PASSIVE`` (set before torch starts) 1.50 s and 1.77-1.81x.
With the cores free (load 1.8-2.0), 2 threads gave the ideal: 1.96x [1.86, 2.07] and 1.96x
[1.84, 2.07] (passive: 1.94x and 2.02x), the LM head taking 19% of the dense time (its FLOP share:
20%). The speed chapter's 2.13x over an ideal of 1.90x, its 12-layer model faster than its
11-layer one, came from such a shared machine: every model ran at 0.56-0.63 of its idle speed
(``benchmarks/prefill_speed.py``).
:class:`SpeedRounds` therefore records the thread count and the machine's load; a load above
the cores means such a ratio is biased upward: time with ``torch.set_num_threads(1)`` and
``clock="cpu"`` (the process's CPU time, which other processes do not lengthen), with
``OMP_WAIT_POLICY=PASSIVE``, or on an idle machine.
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

__all__ = ["CLOCKS", "prefill_tokens_per_second", "decode_tokens_per_second", "SpeedRounds", "compare_prefill_speed",
           "compare_decode_speed"]

#: What a speed is timed by: ``wall``, elapsed time; ``cpu``, this process's CPU time
#: (``time.process_time``), which other processes on the cores do not lengthen: the robust
#: measure of the work on a shared machine with ``torch.set_num_threads(1)`` (with more threads
#: it also counts the time threads spin at barriers). CPU only: it does not see a GPU's work.
CLOCKS: tuple[str, ...] = ("wall", "cpu")


def _timer(clock: str, device: torch.device):
    if clock not in CLOCKS:
        raise ValueError(f"clock={clock!r}: choose one of {', '.join(map(repr, CLOCKS))}")
    if clock == "cpu" and device.type != "cpu":
        raise ValueError(f"clock='cpu' times this process's CPU work, not the {device.type} device's: use clock='wall'")
    return time.perf_counter if clock == "wall" else time.process_time


def _best_time(run, device: torch.device, repeats: int, clock: str = "wall") -> float:
    """The shortest of ``repeats`` timed calls of ``run``: the one least disturbed by other work."""
    timer = _timer(clock, device)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = timer()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, timer() - start)
    return best


@torch.inference_mode()
def prefill_tokens_per_second(
    model: nn.Module, sequences: torch.Tensor, batch_size: int = 8, warmup: int = 1, repeats: int = 3,
    clock: str = "wall",
) -> float:
    """Tokens per second of a full forward pass over ``sequences`` (num_seqs, seq_len).

    Runs ``warmup`` untimed batches first (kernel selection, allocator), then times
    ``repeats`` passes over all sequences and reports the best, the figure least
    disturbed by other work on the machine. ``clock`` is one of :data:`CLOCKS`.
    """
    device = next(model.parameters()).device
    _timer(clock, device)
    batches = [b.to(device) for b in sequences.split(batch_size)]
    for batch in batches[:warmup]:
        model(input_ids=batch, use_cache=False)

    def run() -> None:
        for batch in batches:
            model(input_ids=batch, use_cache=False)

    return sequences.numel() / _best_time(run, device, repeats, clock)


@torch.inference_mode()
def decode_tokens_per_second(
    model: nn.Module, prompts: torch.Tensor, new_tokens: int = 32, warmup: int = 1, repeats: int = 3,
    clock: str = "wall",
) -> float:
    """New tokens per second of greedy decoding with the KV cache, after a prompt.

    ``prompts`` (batch, prompt_len) are fed once (prefill, not counted), then
    ``new_tokens`` tokens are generated one forward pass at a time; end-of-text never
    stops it, so every run decodes the same number of tokens. This is the paper's
    setting for its speed table (generation, batch of one prompt per row). Best of
    ``repeats``, after ``warmup`` untimed runs; ``clock`` is one of :data:`CLOCKS`.
    """
    if new_tokens < 1:
        raise ValueError(f"new_tokens={new_tokens}: decode at least one token")
    device = next(model.parameters()).device
    _timer(clock, device)
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
        best = min(best, _best_time(lambda: decode(prefilled), device, 1, clock))
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
    clock: str = "wall"  # one of CLOCKS

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
                 rounds: int, clock: str) -> SpeedRounds:
    """``measure(model, warmup)`` of every model once with a warm-up, then once per model per round, in turn."""
    if rounds < 2:
        raise ValueError(f"rounds={rounds}: an interval needs at least 2 rounds")
    for model in models.values():
        measure(model, 1)
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            speeds[name].append(measure(model, 0))
    return SpeedRounds(speeds, torch.get_num_threads(), _load_average(), os.cpu_count(), clock)


def compare_prefill_speed(models: Mapping[str, nn.Module], sequences: torch.Tensor, batch_size: int = 8,
                          rounds: int = 9, clock: str = "wall") -> SpeedRounds:
    """Prefill speed of each of ``models`` on ``sequences`` in ``rounds`` interleaved rounds.

    As :func:`compare_decode_speed`, with one timed :func:`prefill_tokens_per_second` pass over
    all ``sequences`` per model per round (after one warm-up pass each). Judge a speed-up by
    :meth:`SpeedRounds.ratio_interval`, and check :attr:`SpeedRounds.contended`; on a shared
    machine time with one thread and ``clock="cpu"`` (see the module docstring).
    """
    return _interleaved(models, lambda model, warmup: prefill_tokens_per_second(
        model, sequences, batch_size, warmup=len(sequences) if warmup else 0, repeats=1, clock=clock), rounds,
        clock)


def compare_decode_speed(models: Mapping[str, nn.Module], prompts: torch.Tensor, new_tokens: int = 32,
                         rounds: int = 9, clock: str = "wall") -> SpeedRounds:
    """Greedy decoding speed of each of ``models`` in ``rounds`` interleaved rounds.

    Every model is warmed up once; then each round times every model once, in turn
    (:func:`decode_tokens_per_second` with one run), so a slow spell of the machine slows all
    models of that round alike and the per-round ratios cancel it. Use the spread of the
    ratios (:meth:`SpeedRounds.ratio_interval`) to tell a speed-up from timing noise.
    """
    return _interleaved(models, lambda model, warmup: decode_tokens_per_second(
        model, prompts, new_tokens, warmup=warmup, repeats=1, clock=clock), rounds, clock)
