"""Last-word prediction (LAMBADA), scored as lm-evaluation-harness scores it, in the zero-shot results' form.

lm-eval's ``lambada_openai`` is a ``loglikelihood`` task: one request per passage,
``(passage before its last word, " " + last word)``
(:class:`~streamline_lib.data.zero_shot_tasks.LastWordItem`), tokenised like every other
request (:func:`~streamline_lib.evaluation.zero_shot.encode_requests`). It reports:

* **acc**: 1 when every token of the word is the model's most likely next token at its
  position (the argmax of the logits, given the passage and the word's earlier tokens;
  ties go to the lowest token id, as ``torch.argmax``): HFLM's ``is_greedy``. Mean over
  passages.
* **perplexity**: ``exp(-mean over passages of log P(word | passage))``, lm-eval's
  ``perplexity`` aggregation: a mean of per-passage log-likelihoods, not of per-token ones
  (:func:`last_word_perplexity`).

Every passage becomes a :class:`LastWordResult`, which answers what accuracies and
comparisons ask of a multiple-choice :class:`~streamline_lib.evaluation.zero_shot.ItemResult`
(:class:`~streamline_lib.evaluation.zero_shot.ScoredItem`: ``is_correct``, ``answer``), so a
task of them sits in a :class:`~streamline_lib.evaluation.zero_shot.ZeroShotResult` next to
multiple-choice tasks: :func:`~streamline_lib.evaluation.zero_shot.evaluate_zero_shot` scores
LAMBADA through :func:`evaluate_last_word_task` when it is among the tasks, with the same
results cache, and the macro average, :func:`~streamline_lib.evaluation.zero_shot.retention`,
:func:`~streamline_lib.evaluation.zero_shot.above_chance_retention` (chance is 0),
:func:`~streamline_lib.evaluation.statistics.compare` and
:func:`~streamline_lib.evaluation.distance.flips` cover it. There are no options to
normalise, so ``acc_norm == acc`` here.

Scoring: every passage whole, in right-padded batches, longest first (lm-eval's order),
keeping only the logits of the word's positions, from which the log-likelihood (the
same float32 sum as the multiple-choice scorer's), the greedy check and the margin come.
A passage shares no prefix with another, so the multiple-choice scorer's prefix packing
would buy nothing here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..core import results_cache
from ..core.progress import progress_bar
from ..data.zero_shot_tasks import LastWordItem, chance_level
from .zero_shot import (
    TASK_EVALUATORS,
    EncodedRequest,
    Metric,
    TaskResult,
    check_metric,
    continuation_logliks,
    encode_requests,
    max_context_length,
    padded_rows,
    task_cache_key,
    whole_batches,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["LAST_WORD_VERSION", "LastWordResult", "score_last_words", "score_last_word_items",
           "last_word_perplexity", "evaluate_last_word_task"]

#: Part of the cache key of last-word results, next to :data:`~streamline_lib.evaluation.zero_shot.SCORING_VERSION`:
#: bump it whenever a change here could change a stored number.
LAST_WORD_VERSION = 1


@dataclass(frozen=True)
class LastWordResult:
    """A model's scores on one passage's last word, and whether it predicted it.

    ``margin`` is, over the word's tokens, the smallest gap between the token's
    log-probability and the best other token's: > 0 when every token is the unique
    argmax, so it plays the part of a multiple-choice item's log-likelihood margin
    (:func:`~streamline_lib.evaluation.statistics.loglik_margin`). ``predicted`` are the
    argmax tokens at the word's positions (each given the true earlier tokens): the
    model's answer, equal to the word's tokens exactly when ``greedy``.
    """

    task: str
    index: int  # the passage's row in its dataset split
    loglik: float  # log P(word | passage), summed over the word's tokens
    num_tokens: int  # the word's tokens (the continuation's)
    greedy: bool  # every token of the word is the argmax: lm-eval's is_greedy, its acc
    margin: float
    predicted: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.num_tokens < 1 or len(self.predicted) != self.num_tokens:
            raise ValueError(f"{self.task}[{self.index}]: needs one predicted token per continuation token "
                             f"(at least one), got {len(self.predicted)} for {self.num_tokens}")

    @property
    def perplexity(self) -> float:
        """Per-token perplexity of the word, ``exp(-loglik / num_tokens)``."""
        return math.exp(-self.loglik / self.num_tokens)

    @property
    def correct(self) -> bool:
        return self.greedy

    def answer(self, metric: Metric = "acc") -> tuple[int, ...]:
        """The model's answer, the same under both metrics: its argmax tokens at the word's positions."""
        check_metric(metric)
        return self.predicted

    def is_correct(self, metric: Metric = "acc") -> bool:
        """Whether the word is predicted greedily; ``"acc_norm"`` is the same (no options to normalise)."""
        check_metric(metric)
        return self.greedy


def _word_scores(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, bool, float, tuple[int, ...]]:
    """Log-likelihood, greedy check, margin and argmax tokens from the word's ``(n, vocab)`` logits."""
    loglik = continuation_logliks(logits, targets).item()  # the multiple-choice scorer's float32 sum
    logprobs = logits.float().log_softmax(dim=-1)
    predicted = logprobs.argmax(dim=-1)
    top2 = logprobs.topk(2, dim=-1).values
    target = logprobs.gather(-1, targets[:, None])[:, 0]
    best_other = torch.where(predicted == targets, top2[:, 1], top2[:, 0])
    return (loglik, bool((predicted == targets).all()), (target - best_other).min().item(),
            tuple(predicted.tolist()))


@torch.inference_mode()
def score_last_words(model: nn.Module, requests: Sequence[EncodedRequest], batch_size: int = 16,
                     progress: bool = True, desc: str = "last word"
                     ) -> list[tuple[float, bool, float, tuple[int, ...]]]:
    """Per request, in the order given: ``(loglik, greedy, margin, predicted)``, as :class:`LastWordResult` holds them.

    The requests are already encoded (:func:`~streamline_lib.evaluation.zero_shot.encode_requests`).
    Right-padded batches of at most ``batch_size`` rows, longest first; the batch size
    changes speed, not results (up to float rounding). The model is put in eval mode for
    the call and restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of rows, got {batch_size}")
    rows, batches = whole_batches(requests, batch_size)
    device = next(model.parameters()).device
    scores: list[Any] = [None] * len(requests)
    was_training = model.training
    model.eval()
    try:
        for batch in progress_bar(batches, desc, enabled=progress):
            width = len(batch[0])
            input_ids, attention_mask = padded_rows(batch)
            # Logits at position p predict token p + 1: keep them from the batch's earliest word position.
            first = min(len(ids) - requests[i].num_continuation for ids in batch for i in rows[ids])
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                           use_cache=False, logits_to_keep=width - first).logits
            for row, ids in enumerate(batch):
                for i in rows[ids]:
                    n = requests[i].num_continuation
                    start = len(ids) - n - first
                    targets = torch.tensor(requests[i].tokens[-n:], device=logits.device)
                    scores[i] = _word_scores(logits[row, start:start + n], targets)
    finally:
        model.train(was_training)
    return scores


def _results(items: Sequence[LastWordItem], encoded: Sequence[EncodedRequest],
             scores: Sequence[tuple[float, bool, float, tuple[int, ...]]]) -> tuple[LastWordResult, ...]:
    return tuple(LastWordResult(item.task, item.index, loglik, request.num_continuation, greedy, margin, predicted)
                 for item, request, (loglik, greedy, margin, predicted) in zip(items, encoded, scores))


def _requests(items: Sequence[LastWordItem]) -> list[tuple[str, str]]:
    return [request for item in items for request in item.requests()]


def score_last_word_items(model: nn.Module, tokenizer: PreTrainedTokenizerBase, items: Sequence[LastWordItem],
                          batch_size: int = 16, progress: bool = True) -> tuple[LastWordResult, ...]:
    """Score any last-word items (no cache): one :class:`LastWordResult` per item."""
    encoded = encode_requests(tokenizer, _requests(items), max_context_length(model))
    return _results(items, encoded, score_last_words(model, encoded, batch_size, progress))


def last_word_perplexity(items: TaskResult | Sequence[LastWordResult]) -> float:
    """lm-eval's ``perplexity`` of a last-word task: ``exp(-mean of the passages' log P(word | passage))``."""
    results = items.items if isinstance(items, TaskResult) else items
    if not results or not all(isinstance(item, LastWordResult) for item in results):
        raise ValueError("last_word_perplexity() needs one or more LastWordResult items (a last-word task)")
    return math.exp(-sum(item.loglik for item in results) / len(results))


# --- evaluation with the results cache (called by evaluate_zero_shot) -------------------

def _task_to_json(result: TaskResult) -> dict[str, Any]:
    # acc, perplexity and n are written for people reading the file; loading recomputes them.
    return {"task": result.task, "chance": result.chance, "n": result.n, "acc": result.acc,
            "perplexity": last_word_perplexity(result), "items": [asdict(item) for item in result.items]}


def _task_from_json(data: dict[str, Any]) -> TaskResult:
    items = tuple(LastWordResult(task=d["task"], index=d["index"], loglik=d["loglik"], num_tokens=d["num_tokens"],
                                 greedy=d["greedy"], margin=d["margin"], predicted=tuple(d["predicted"]))
                  for d in data["items"])
    return TaskResult(task=data["task"], items=items, chance=data["chance"])


def evaluate_last_word_task(model: nn.Module, tokenizer: PreTrainedTokenizerBase, task: str,
                            items: Sequence[LastWordItem], limit: int | None, seed: int | None,
                            model_fingerprint: str | None, cache_folder: Path | None, batch_size: int,
                            progress: bool, prompt_nll: bool = False) -> TaskResult:
    """One last-word task's :class:`~streamline_lib.evaluation.zero_shot.TaskResult`, from the cache when there.

    What :func:`~streamline_lib.evaluation.zero_shot.evaluate_zero_shot` calls for such a task,
    with the arguments of the multiple-choice evaluator; the cache key has the same
    entries (model, task, limit, seed, prompts, tokens, scoring version) plus this
    scorer's name and :data:`LAST_WORD_VERSION`. ``prompt_nll`` is a multiple-choice
    option (the stability metric's input); a passage has no options, so it is ignored.
    """
    del prompt_nll
    requests = _requests(items)
    encoded = encode_requests(tokenizer, requests, max_context_length(model))
    key = None
    if cache_folder is not None:
        key = task_cache_key(model_fingerprint, task, limit, seed, requests, encoded) | {
            "scorer": "last_word", "last_word_version": LAST_WORD_VERSION}
        cached = results_cache.load_result(cache_folder, key, _task_from_json)
        if cached is not None:
            return cached
    result = TaskResult(task, _results(items, encoded, score_last_words(model, encoded, batch_size, progress, task)),
                        chance_level(items))
    if key is not None:
        results_cache.store_result(cache_folder, key, _task_to_json(result))
    return result


TASK_EVALUATORS[LastWordItem] = evaluate_last_word_task  # evaluate_zero_shot scores LAMBADA with it
