"""Benchmark of the foundation: load times and float32 vs bfloat16 speed and accuracy.

Run ``python -m streamline_lib.bench`` (``--model``, ``--seqs``, ``--seq-len``).
It prints figures and ratios, nothing is asserted: speed depends on the machine.
Set ``STREAMLINE_CACHE`` to an empty folder to include the first (converting) load.
"""

from __future__ import annotations

import argparse
import time

import torch

from .evaluation import perplexity
from .models import DEFAULT_MODEL, load_model
from .speed import prefill_tokens_per_second
from .text_data import token_sequences


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--seqs", type=int, default=16, help="held-out sequences for perplexity")
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args(argv)

    (_, tokenizer), first = _timed(lambda: load_model(args.model, dtype="float32"))
    print(f"first load (converts GGUF unless cached): {first:.2f} s")
    rows = []
    for dtype in ("float32", "bfloat16"):
        (model, _), seconds = _timed(lambda: load_model(args.model, dtype=dtype))
        heldout = token_sequences(tokenizer, "wiki", "heldout", num_seqs=args.seqs, seq_len=args.seq_len)
        speed = prefill_tokens_per_second(model, heldout[:8], batch_size=8)
        ppl = perplexity(model, heldout, progress=False)
        rows.append((dtype, seconds, speed, ppl))
        print(f"{dtype:>9}: cached load {seconds:.2f} s, {speed:,.0f} tokens/s (prefill, batch 8 x "
              f"{args.seq_len}), held-out Wikipedia perplexity {ppl:.3f}")
        del model
    (_, _, s32, p32), (_, _, s16, p16) = rows
    print(f"bfloat16 / float32: speed x{s16 / s32:.2f}, perplexity {100 * (p16 / p32 - 1):+.2f}% "
          f"({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
