"""A pruned SmolLM2 as a GGUF file: its size, its agreement with the transformers model, and its speed.

Steps, all on this machine's CPU:

1. prune the bundled SmolLM2-135M at 25% of all parameters (the cosine block on 32 x 256
   Wikipedia calibration tokens; plain removal, or ReplaceMe's folded linear map with
   ``--replacement linear``) and save it with ``save_pruned``;
2. write the pruned model and the dense one as float16 GGUF files (``export_gguf``);
3. agreement on held-out Wikipedia tokens: the logits of the GGUF file read back by
   transformers' GGUF loader and, when ``llama-cpp-python`` is installed, computed by llama.cpp,
   against the transformers model in float32 (largest difference relative to the largest
   logit, and how often the top token agrees);
4. decoding speed, batch of one, greedy, with the KV cache: transformers (float32 and
   bfloat16) and llama.cpp (float16 GGUF), dense and pruned, timed in interleaved rounds
   (``compare_decode_speed``), and the pruned/dense ratio in each runtime with its interval.

``make bench-gguf`` installs llama-cpp-python (it compiles llama.cpp: cmake and a C++ compiler
are needed) and runs this script; without the bindings the llama.cpp rows are left out and said
so. ``python benchmarks/gguf_export.py --help`` lists the options.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from streamline_lib.data.text_data import token_sequences
from streamline_lib.evaluation.speed import SpeedRounds, compare_decode_speed
from streamline_lib.export import save_pruned
from streamline_lib.export.gguf import export_gguf, gguf_logits
from streamline_lib.methods.pruning import prune
from streamline_lib.methods.scoring import block_scores, collect_stats
from streamline_lib.methods.sparsity import layers_for_sparsity
from streamline_lib.models import DEFAULT_MODEL, bundled_model_dir, load_model

try:
    import llama_cpp
except ImportError:  # optional: make bench-gguf installs it
    llama_cpp = None


def _llama_cpp(path: Path, n_ctx: int, logits_all: bool):
    return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_threads=torch.get_num_threads(), logits_all=logits_all,
                           verbose=False, seed=0)


def llama_cpp_logits(path: Path, sequences: torch.Tensor) -> torch.Tensor:
    """llama.cpp's logits for every position of every sequence (float32)."""
    llm = _llama_cpp(path, sequences.shape[1], logits_all=True)
    rows = []
    for sequence in sequences.tolist():
        llm.reset()
        llm.eval(sequence)
        rows.append(torch.from_numpy(np.array(llm.scores[: len(sequence)], dtype=np.float32)))
    return torch.stack(rows)


def llama_cpp_decode_rate(llm, prompt: list[int], new_tokens: int) -> float:
    """New tokens per second of one greedy decoding run in llama.cpp after ``prompt`` (prefill not counted)."""
    llm.reset()
    llm.eval(prompt)
    start = time.perf_counter()
    for _ in range(new_tokens):
        llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
    return new_tokens / (time.perf_counter() - start)


def llama_cpp_rounds(files: dict[str, Path], prompt: list[int], new_tokens: int, rounds: int) -> SpeedRounds:
    """llama.cpp's decoding speed of each file in interleaved rounds, after one warm-up run each."""
    llms = {name: _llama_cpp(path, len(prompt) + new_tokens + 1, logits_all=False) for name, path in files.items()}
    for llm in llms.values():
        llama_cpp_decode_rate(llm, prompt, new_tokens)
    speeds = {name: [] for name in llms}
    for _ in range(rounds):
        for name, llm in llms.items():
            speeds[name].append(llama_cpp_decode_rate(llm, prompt, new_tokens))
    return SpeedRounds(speeds)


def agreement(logits: torch.Tensor, reference: torch.Tensor) -> str:
    relative = ((logits - reference).abs().max() / reference.abs().max()).item()
    top1 = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    return f"largest difference {relative:.2e} of the largest logit, same top token at {top1:.1%} of positions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.25, help="share of all parameters removed (0.25)")
    parser.add_argument("--replacement", choices=["none", "linear"], default="none",
                        help="plain removal or ReplaceMe's folded map (default: none)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens decoded per speed run (64)")
    parser.add_argument("--check-seqs", type=int, default=4, help="held-out sequences of 128 tokens compared (4)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds per runtime (7)")
    args = parser.parse_args()

    model, tokenizer = load_model(DEFAULT_MODEL, dtype="float32")
    calibration = token_sequences(tokenizer, "wiki", "calibration", num_seqs=32, seq_len=256, seed=0)
    heldout = token_sequences(tokenizer, "wiki", "heldout", num_seqs=args.check_seqs, seq_len=128, seed=0)
    n = layers_for_sparsity(model, args.sparsity)
    start = block_scores(collect_stats(model, calibration), "cosine", n).best_start
    result = prune(model, start, n, replacement=args.replacement, train_sequences=calibration)
    print(f"pruned {DEFAULT_MODEL}: layers {start}..{start + n - 1} removed ({args.replacement}), "
          f"{result.model.config.num_hidden_layers} layers left")

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pruned(result, tokenizer, Path(tmp) / "pruned", source_model=DEFAULT_MODEL, metric="cosine")
        files = {"pruned": export_gguf(folder, dtype="f16").path,
                 "dense": export_gguf(bundled_model_dir(DEFAULT_MODEL), out=Path(tmp) / "dense-f16.gguf").path}
        print("\nsize on disk")
        sizes = {"pruned, safetensors float32 (the export folder)": folder / "model.safetensors",
                 **{f"{name}, GGUF float16": path for name, path in files.items()}}
        for label, path in sizes.items():
            print(f"  {label:<50}{path.stat().st_size / 2**20:7.1f} MiB")

        reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        with torch.no_grad():
            expected = reference(heldout).logits
        print(f"\nagreement with the transformers model in float32 ({heldout.numel():,} held-out tokens)")
        print(f"  GGUF float16 read back by transformers: {agreement(gguf_logits(files['pruned'], heldout), expected)}")
        if llama_cpp is not None:
            print(f"  GGUF float16 run by llama.cpp:          {agreement(llama_cpp_logits(files['pruned'], heldout), expected)}")

        prompt = heldout[:1, :32]
        speeds = {}
        for dtype in ("float32", "bfloat16"):
            pair = {"dense": load_model(DEFAULT_MODEL, dtype=dtype)[0], "pruned": load_model(str(folder), dtype=dtype)[0]}
            speeds[f"transformers {dtype}"] = compare_decode_speed(pair, prompt, args.new_tokens, rounds=args.rounds)
        if llama_cpp is not None:
            speeds["llama.cpp float16 GGUF"] = llama_cpp_rounds(files, prompt[0].tolist(), args.new_tokens, args.rounds)
    print(f"\ndecoding speed, batch 1, {args.new_tokens} new tokens after a 32-token prompt, {torch.get_num_threads()} "
          f"threads, {args.rounds} interleaved rounds (tokens/s: median; ratio: mean of the rounds' ratios [95%])")
    print(f"  {'runtime':<26}{'dense':>9}{'pruned':>9}   pruned/dense")
    for runtime, rounds in speeds.items():
        dense, pruned = (np.median(rounds.tokens_per_second[name]) for name in ("dense", "pruned"))
        ratio = rounds.ratio_interval("pruned", "dense")
        print(f"  {runtime:<26}{dense:9.1f}{pruned:9.1f}   {ratio.estimate:.2f}x [{ratio.low:.2f}, {ratio.high:.2f}]")
    if llama_cpp is None:
        print("  llama.cpp: not measured, llama-cpp-python is not installed (make bench-gguf installs it; it compiles "
              "llama.cpp, so cmake and a C++ compiler are needed)")
    else:
        for name in ("dense", "pruned"):
            best = max(speeds, key=lambda runtime: np.median(speeds[runtime].tokens_per_second[name]))
            fold = (np.median(speeds["llama.cpp float16 GGUF"].tokens_per_second[name])
                    / np.median(speeds["transformers float32"].tokens_per_second[name]))
            print(f"  {name}: fastest runtime {best}; llama.cpp float16 is {fold:.2f}x transformers float32")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
