"""Which start and which loss window train a replacement best: held-out perplexity per variant.

Prunes the 25%-sparsity block the cosine metric chooses and trains replacements on the
same dense pairs (computed once, reused by every variant), then prints for each the
validation MSE before and after training and the held-out perplexity. Variants are
``kind:skip`` with ``kind`` one of ``ffn``, ``ffn_relu``, ``layer`` (the library's
replacements) or ``ffn_copy`` (an FFN that starts as a copy of the first removed
layer's MLP, the library's earlier start for llama-style models, built here from the
library's own classes) and ``skip`` the ``TrainConfig.mse_skip_tokens``.

The numbers quoted in ``TrainConfig`` and the replacement chapter come from
``python benchmarks/replacement_training.py`` (about 25 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence

from streamline_lib.architecture.layers import get_layers, remove_layers, replace_block
from streamline_lib.data.text_data import token_sequences
from streamline_lib.evaluation import perplexity
from streamline_lib.methods.replacement import ResidualFFN, SwiGLU, is_llama_style, make_replacement
from streamline_lib.methods.scoring import score_blocks
from streamline_lib.methods.sparsity import layers_for_sparsity
from streamline_lib.methods.training import TrainConfig, train_replacement
from streamline_lib.models import DEFAULT_MODEL, load_model

KINDS = ("ffn", "ffn_relu", "layer", "ffn_copy")


def copied_mlp_ffn(model, start: int) -> ResidualFFN:
    """An FFN that starts as layer ``start`` without its attention: a copy of its MLP and pre-MLP norm."""
    layer = get_layers(model)[start]
    if not is_llama_style(layer, model.config):
        raise SystemExit("ffn_copy needs a llama-style model (llama, mistral, qwen2)")
    mlp = layer.mlp
    return ResidualFFN(copy.deepcopy(layer.post_attention_layernorm),
                       SwiGLU(*(copy.deepcopy(m) for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--sparsity", type=float, default=0.25)
    parser.add_argument("--train-seqs", type=int, default=1024, help="training sequences of 256 tokens")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--heldout-seqs", type=int, default=64)
    parser.add_argument("--variants", default="ffn:0,ffn:1,ffn_copy:0,ffn_copy:1,ffn_relu:0,ffn_relu:1,layer:0,layer:1",
                        help="comma-separated kind:mse_skip_tokens")
    args = parser.parse_args(argv)
    args.variants = [tuple(v.split(":")) for v in args.variants.split(",") if v]
    bad = [kind for kind, _ in args.variants if kind not in KINDS]
    if bad:
        parser.error(f"unknown kind(s) {', '.join(bad)}; choose from {', '.join(KINDS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model, tokenizer = load_model(args.model, dtype="float32")
    n = layers_for_sparsity(model, args.sparsity)
    calibration = token_sequences(tokenizer, "wiki", "calibration", num_seqs=32, seq_len=256, seed=0)
    start = score_blocks(model, calibration, n, metric="cosine", progress=False).best_start
    train = token_sequences(tokenizer, "wiki", "train", num_seqs=args.train_seqs, seq_len=256, seed=0)
    heldout = token_sequences(tokenizer, "wiki", "heldout", num_seqs=args.heldout_seqs, seq_len=256, seed=0)
    print(f"{args.model}: block {start}..{start + n - 1}; {args.train_seqs * 256:,} training tokens, "
          f"{args.epochs} epochs, lr {args.lr}")
    print(f"dense perplexity {perplexity(model, heldout, progress=False):.2f}, plain removal "
          f"{perplexity(remove_layers(copy.deepcopy(model), start, n), heldout, progress=False):.2f}")
    for kind, skip in args.variants:
        module = copied_mlp_ffn(model, start) if kind == "ffn_copy" else make_replacement(model, start, n, kind)
        pruned = replace_block(copy.deepcopy(model), start, n, module)
        config = TrainConfig(lr=args.lr, epochs=args.epochs, mse_skip_tokens=int(skip), seed=0, progress=False)
        result = train_replacement(pruned, start, train, config, dense=model)
        print(f"{kind}:{skip:<2} validation MSE removal {result.baseline_val_loss:.1f}, untrained "
              f"{result.val_losses[0]:.1f}, trained {result.best_val_loss:.1f}; held-out perplexity "
              f"{perplexity(pruned, heldout, progress=False):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
