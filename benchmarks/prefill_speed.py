"""Why a 50% pruning of SmolLM2 can prefill faster than its ideal: threads, other work, the LM head's share.

Times the prefill of 8 x 256 held-out Wikipedia tokens in bfloat16 (the speed chapter's setting)
for the dense SmolLM2-135M and three pruned models of the chapter's block (start 2): 19 layers
removed (11 left), 19 replaced by one decoder layer (12 left) and 15 removed, in interleaved
rounds (:func:`~streamline_lib.evaluation.speed.compare_prefill_speed`), once per thread count.
Beside them, in their own interleaved rounds: the base model alone (embedding, layers, final
norm) and the LM head alone, with the wall and the process CPU time of each. It prints the
ideal speed-ups by parameter count and by FLOPs (layers' matrix products, causal attention,
LM head) and the machine's load: with other work on the cores, several threads inflate the
layers' time far more than the head's (see :mod:`streamline_lib.evaluation.speed`).

``python benchmarks/prefill_speed.py --threads 1 2`` takes 5-15 minutes on 2 cores; run it again with
``OMP_WAIT_POLICY=PASSIVE`` in the environment to see the threads stop spinning at the barriers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from streamline_lib.architecture.layers import get_layers, lm_head
from streamline_lib.data.text_data import token_sequences
from streamline_lib.evaluation.speed import compare_prefill_speed
from streamline_lib.methods.pruning import prune
from streamline_lib.models import DEFAULT_MODEL, load_model

START = 2  # the cosine block of 19 (and of 15) layers on the chapter's calibration text


def flops_per_token(model, layers: int, context: int) -> float:
    """Multiply-adds x 2 per token: the layers' matrix products, causal attention, the LM head."""
    config = model.config
    per_layer = sum(p.numel() for name, p in get_layers(model)[0].named_parameters() if p.ndim == 2)
    heads_width = config.num_attention_heads * (config.hidden_size // config.num_attention_heads)
    attention = 2 * 2 * heads_width * (context + 1) / 2  # QK^T and AV over the causal half, on average
    return layers * (2 * per_layer + attention) + 2 * lm_head(model).weight.numel()


def component_rounds(model, text: torch.Tensor, rounds: int) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU seconds of the base model and of the LM head alone, interleaved, after a warm-up each."""
    head = lm_head(model)
    with torch.inference_mode():
        hidden = model.model(input_ids=text, use_cache=False).last_hidden_state
        jobs = {"base model (embedding, layers, norm)": lambda: model.model(input_ids=text, use_cache=False),
                "LM head, every position": lambda: head(hidden),
                "LM head, last position only": lambda: head(hidden[:, -1:])}
        times = {name: ([], []) for name in jobs}
        for job in jobs.values():
            job()
        for _ in range(rounds):
            for name, job in jobs.items():
                wall, cpu = time.perf_counter(), time.process_time()
                job()
                times[name][0].append(time.perf_counter() - wall)
                times[name][1].append(time.process_time() - cpu)
    return times


def table(models, rounds, params: dict[str, int], flops: dict[str, float]) -> None:
    load = "unknown" if rounds.load_average is None else f"{rounds.load_average:.2f}"
    print(f"\n{rounds.threads} thread(s), {rounds.clock} clock; load average {load} on {rounds.cores} cores "
          f"(contended: {rounds.contended})")
    print("| model | layers | tokens/s (median) | speed-up [95%] | ideal, parameters | ideal, FLOPs |")
    print("|---|---|---|---|---|---|")
    for name, m in models.items():
        speedup = "1" if name == "dense" else "{0.estimate:.2f} [{0.low:.2f}, {0.high:.2f}]".format(
            rounds.ratio_interval(name, "dense"))
        print(f"| {name} | {len(get_layers(m))} | {np.median(rounds.tokens_per_second[name]):.0f} | {speedup} | "
              f"{params['dense'] / params[name]:.2f} | {flops['dense'] / flops[name]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (1 2)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    args = parser.parse_args()

    model, tokenizer = load_model(DEFAULT_MODEL, dtype="bfloat16")
    text = token_sequences(tokenizer, "wiki", "heldout", num_seqs=8, seq_len=256, seed=0)
    models = {"dense": model, "19 removed": prune(model, START, 19, replacement="none").model,
              "19 -> 1 layer": prune(model, START, 19, replacement="layer").model,
              "15 removed": prune(model, START, 15, replacement="none").model}
    head = lm_head(model).weight.numel()
    params = {name: sum(p.numel() for p in get_layers(m).parameters()) + head for name, m in models.items()}
    flops = {name: flops_per_token(model, len(get_layers(m)), text.shape[1]) for name, m in models.items()}
    print(f"{DEFAULT_MODEL}, bfloat16, prefill of {tuple(text.shape)} tokens; LM head {head / params['dense']:.1%} "
          f"of the per-token parameters, {2 * head / flops['dense']:.1%} of the FLOPs")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for clock in ("wall", "cpu") if threads == 1 else ("wall",):  # CPU time measures work only with 1 thread
            table(models, compare_prefill_speed(models, text, batch_size=8, rounds=args.rounds, clock=clock),
                  params, flops)
        print(f"dense model's parts, {threads} thread(s) (median wall s | CPU s of the process):")
        for name, (wall, cpu) in component_rounds(model, text, args.rounds).items():
            print(f"  {name:38s} {np.median(wall):.3f} | {np.median(cpu):.3f}")


if __name__ == "__main__":
    main()
