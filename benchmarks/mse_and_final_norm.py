"""What a replacement's hidden-state MSE measures when the removed block ends at the last layer.

Chapter 4 (``03_replacement``) trains each replacement to minimise the mean squared
error to the dense model's block output. On Gemma-3-270M at 25% of all parameters the
block is layers 6..17 of 18, so that output goes straight into the final norm and the
LM head, and the authors' ``ffn_relu`` reaches half of plain removal's MSE yet a
higher perplexity. This script rebuilds the chapter's models (the trained
replacements come from the on-disk cache the chapter filled; missing ones are trained)
and prints, on held-out windows, for the dense model, plain removal and each
replacement:

* the LM loss (log of the perplexity) and the MSE to the dense state at positions 1+;
* the median cosine to the dense state before and after the final norm (what the LM head sees);
* how much of the dense state's energy its largest dimensions hold before and after the final norm;
* how confident the predictions are (mean largest logit, mean entropy): a broken model
  that is confidently wrong has a higher perplexity than one that is unsure.

Run: ``.venv/bin/python benchmarks/mse_and_final_norm.py [--model gemma3-270m]`` (a few
minutes when the chapter's caches are warm).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from streamline_lib.architecture.layers import get_layers
from streamline_lib.data.text_data import available_sequences, token_sequences
from streamline_lib.methods.pruning import prune
from streamline_lib.methods.scoring import score_blocks
from streamline_lib.methods.sparsity import layers_for_sparsity
from streamline_lib.methods.training import TrainConfig
from streamline_lib.models import load_model

LARGEST_DIMS = 8


def final_state(model: nn.Module, sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The state the final norm receives (output of the last decoder module), the logits and the LM loss."""
    captured: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, inputs: tuple, output: torch.Tensor | tuple) -> None:
        captured["state"] = output[0] if isinstance(output, tuple) else output

    handle = get_layers(model)[-1].register_forward_hook(keep)
    try:
        with torch.no_grad():
            out = model(input_ids=sequences, labels=sequences)
    finally:
        handle.remove()
    return captured["state"].float(), out.logits.float(), out.loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--sparsity", type=float, default=0.25)
    parser.add_argument("--windows", type=int, default=8, help="held-out windows of 256 tokens")
    args = parser.parse_args()
    # the chapter's settings, so that the cached replacements are the chapter's
    seed, seq_len = 0, 256
    torch.manual_seed(seed)
    model, tokenizer = load_model(args.model, dtype="auto", device="cpu")
    calibration = token_sequences(tokenizer, "wiki", "calibration", num_seqs=32, seq_len=seq_len, seed=seed)
    train_seqs = min(1024, available_sequences(tokenizer, "wiki", "train", seq_len))
    train = token_sequences(tokenizer, "wiki", "train", num_seqs=train_seqs, seq_len=seq_len, seed=seed)
    heldout = token_sequences(tokenizer, "wiki", "heldout", num_seqs=64, seq_len=seq_len, seed=seed)[: args.windows]
    n = layers_for_sparsity(model, args.sparsity)
    start = score_blocks(model, calibration, n, metric="cosine").best_start
    layers = model.config.num_hidden_layers
    print(f"{args.model}: block {start}..{start + n - 1} of {layers} layers"
          + (" (it ends at the last layer: its output goes straight into the final norm)"
             if start + n == layers else ""))
    config = TrainConfig(lr=1e-3, epochs=5, seed=seed)
    models = {"dense": model, "none": prune(model, start, n, replacement="none").model}
    for kind in ["ffn", "ffn_relu", "layer"]:
        models[kind] = prune(model, start, n, replacement=kind, train_sequences=train, train_config=config,
                             cache=True).model

    final_norm = getattr(model.model, "norm", None)  # llama-style and Gemma models; OPT and GPT-2 name it otherwise
    if final_norm is None:
        raise SystemExit(f"{args.model}: no final norm at model.model.norm; this script reads llama-style and Gemma models")
    target, _, _ = final_state(model, heldout)
    target = target[:, 1:]
    with torch.no_grad():
        target_normed = final_norm(target.to(model.dtype)).float()
    largest = target.abs().mean((0, 1)).argsort(descending=True)[:LARGEST_DIMS]
    raw_share = target[..., largest].pow(2).sum() / target.pow(2).sum()
    normed_share = target_normed[..., largest].pow(2).sum() / target_normed.pow(2).sum()
    print(f"dense state, positions 1+ of {args.windows} x {seq_len} held-out tokens: its {LARGEST_DIMS} largest of "
          f"{target.shape[-1]} dimensions hold {raw_share:.1%} of its energy before the final norm and "
          f"{normed_share:.1%} after it\n")
    print(f"{'model':9s} {'LM loss':>8s} {'MSE (1+)':>12s} {'cos before norm':>16s} {'cos after norm':>15s} "
          f"{'mean max logit':>15s} {'mean entropy':>13s}")
    for name, pruned in models.items():
        state, logits, loss = final_state(pruned, heldout)
        state = state[:, 1:]
        with torch.no_grad():
            normed = final_norm(state.to(model.dtype)).float()
        log_probs = logits.log_softmax(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1).mean().item()
        print(f"{name:9s} {loss:8.2f} {(state - target).pow(2).mean().item():12,.0f} "
              f"{F.cosine_similarity(state, target, dim=-1).median().item():16.3f} "
              f"{F.cosine_similarity(normed, target_normed, dim=-1).median().item():15.3f} "
              f"{logits.max(-1).values.mean().item():15.1f} {entropy:13.2f}")


if __name__ == "__main__":
    main()
