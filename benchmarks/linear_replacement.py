"""ReplaceMe's map on SmolLM2-135M: least squares with and without ridge, and the cosine variant.

Removes the block the book uses at 25% of all parameters (9 layers from layer 10), fits the
map on ``--train-seqs`` windows of 256 tokens of the Wikipedia ``train`` split (32: the
calibration size of the scoring chapters; 1,024: what ``compress`` and the CLI give
ReplaceMe by default), folds it and reports, per variant, the held-out perplexity
(64 x 256 tokens of the ``heldout`` split), the block-output errors the fit reports and its
wall time. Variants: plain removal; ``lstsq`` with ridge 0 (the reference's and the
library's default), with ridge 1e-4 (the library's former default) and with no skipped
position (the reference keeps every token); ``cosine`` with the reference's Adam settings
(:class:`~streamline_lib.methods.linear_replacement.CosineConfig`), with no skipped position, with
its exact objective (``with_residual``), and with ten times the learning rate. ``--dtype float32`` repeats it in
float32, with the conditioning of ``M^T M``.

``python benchmarks/linear_replacement.py --train-seqs 32`` took 9 minutes on 2 shared cores;
``--train-seqs 1024 --variants "lstsq, ridge 0;lstsq, ridge 1e-4;cosine (reference settings);cosine, with
residual"`` an hour (each fit is a forward pass over the 262,144 tokens).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from streamline_lib.architecture.layers import remove_layers
from streamline_lib.data.text_data import token_sequences
from streamline_lib.evaluation.held_out import perplexity
from streamline_lib.methods.linear_replacement import CosineConfig, fit_linear_map, fold_linear_map
from streamline_lib.models import DEFAULT_MODEL, load_model

START, N = 10, 9  # the cosine block at 25% of all parameters (the book's choice)

VARIANTS = {
    "lstsq, ridge 0": dict(loss="lstsq", ridge=0.0),
    "lstsq, ridge 1e-4": dict(loss="lstsq", ridge=1e-4),
    "lstsq, ridge 0, no skipped token": dict(loss="lstsq", ridge=0.0, skip_tokens=0),
    "cosine (reference settings)": dict(loss="cosine", cosine=CosineConfig()),
    "cosine, no skipped token": dict(loss="cosine", skip_tokens=0, cosine=CosineConfig()),
    "cosine, with residual": dict(loss="cosine", cosine=CosineConfig(with_residual=True)),
    "cosine, lr 1e-3": dict(loss="cosine", cosine=CosineConfig(lr=1e-3)),
}


class SpyOnSolve:
    """Within the block, keeps the ``M^T M`` of every least-squares solve (its eigenvalue range, in float64)."""

    def __enter__(self):
        self.solve, self.seen = torch.linalg.solve, []

        def spy(a, b):
            self.seen.append(a)
            return self.solve(a, b)

        torch.linalg.solve = spy
        return self

    def __exit__(self, *exc):
        torch.linalg.solve = self.solve

    def conditioning(self) -> str:
        eigen = torch.linalg.eigvalsh(self.seen[-1])
        return f"M^T M eigenvalues {eigen[0]:.3g} .. {eigen[-1]:.3g} (condition number {eigen[-1] / eigen[0]:.3g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-seqs", type=int, default=32, help="training windows of 256 tokens (32)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="model dtype")
    parser.add_argument("--variants", help="semicolon-separated subset of the variants (default: all)")
    args = parser.parse_args()

    model, tokenizer = load_model(DEFAULT_MODEL, dtype=args.dtype)
    train = token_sequences(tokenizer, "wiki", "train", num_seqs=args.train_seqs, seq_len=256, seed=0)
    heldout = token_sequences(tokenizer, "wiki", "heldout", num_seqs=64, seq_len=256, seed=0)
    print(f"{DEFAULT_MODEL} in {model.dtype}, {torch.get_num_threads()} threads; layers {START}..{START + N - 1} "
          f"removed; {train.numel():,} training tokens, {heldout.numel():,} held-out tokens")
    began = time.perf_counter()
    rows = [("plain removal", perplexity(remove_layers(copy.deepcopy(model), START, N), heldout, progress=False),
             None, 0.0)]
    print(f"(plain removal evaluated in {time.perf_counter() - began:.0f} s)")
    chosen = VARIANTS if args.variants is None else {k: VARIANTS[k] for k in args.variants.split(";")}
    for name, settings in chosen.items():
        with SpyOnSolve() as spy:
            t, fit = fit_linear_map(model, START, N, train, progress=False, **settings)
        if spy.seen:
            print(f"  {name}: {spy.conditioning()}")
        pruned = copy.deepcopy(model)
        fold_linear_map(pruned, START - 1, t)
        rows.append((name, perplexity(remove_layers(pruned, START, N), heldout, progress=False), fit, fit.seconds))
        print(f"  {name}: {fit}", flush=True)
    print(f"\n| variant | held-out perplexity | block MSE (removal {rows[1][2].removal_error:.4g}) | "
          "cosine distance (removal) | fit seconds |")
    print("|---|---|---|---|---|")
    for name, ppl, fit, seconds in rows:
        mse = "" if fit is None else f"{fit.fitted_error:.4g}"
        cos = "" if fit is None or fit.fitted_cosine is None else f"{fit.fitted_cosine:.4f} ({fit.removal_cosine:.4f})"
        print(f"| {name} | {ppl:.2f} | {mse} | {cos} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
