"""Zero-shot multiple-choice accuracy, scored the way lm-evaluation-harness scores it.

LLM-Streamline and its peers report zero-shot accuracy measured with EleutherAI's
lm-evaluation-harness ("lm-eval"). This module reproduces its ``loglikelihood``
scoring of multiple-choice tasks for decoder-only models, from the harness's
documented behaviour (our own code):

* **Tokenisation.** A request ``(context, continuation)`` is encoded whole; the
  continuation's tokens are those after the first ``len(encode(context))``. Trailing
  whitespace of the context moves to the continuation. The model sees
  ``encode(context) + continuation tokens`` (lm-eval's ``context_enc +
  continuation_enc``). A BOS token is prepended when the tokenizer adds one by
  default (Gemma's does, SmolLM2's does not; lm-eval adds BOS for Gemma); an
  empty context becomes the BOS token (EOS when there is none). Inputs longer than
  the model's context are cut on the left, keeping the whole continuation.
* **Score.** ``log P(continuation | context)``: the sum of the continuation tokens'
  log-probabilities, from a log-softmax computed in float32 whatever the model's dtype.
* **Accuracy.** ``acc``: the option with the highest log-likelihood is the answer.
  ``acc_norm``: the highest log-likelihood per character of the option text (the
  continuation without the one leading space lm-eval adds as ``target_delimiter``),
  lm-eval's length normalisation. Ties go to the first option (``numpy.argmax``).
  lm-eval reports ``acc_norm`` only for ARC, HellaSwag, OpenBookQA and PIQA; for
  WinoGrande every option scores the same continuation, so here ``acc_norm == acc``.
* **Whole-prompt NLL** (opt-in, ``prompt_nll=True``; the input of the stability
  metric in its authors' form, :mod:`streamline_lib.evaluation.stability`). What
  OpenCompass's HuggingFace wrapper calls "PPL": the negative log-likelihood of
  every predicted token of the whole request (context and continuation, no mask),
  divided by the number of its tokens, the first, unpredicted one (BOS when the
  tokenizer adds one) included. It needs the LM head at every position, not only
  the continuation's, which costs more than a small model's body for a large
  vocabulary, so only the dense model's stability reference should ask for it.

Requests are sorted by length and scored in right-padded batches, so the batch
size changes speed, not results (up to float rounding). With ``cache``, results are kept
on disk (:mod:`streamline_lib.core.results_cache`), keyed by the model's weights, the
prompts, their tokens and :data:`SCORING_VERSION`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload, runtime_checkable

import torch
from torch import nn

from ..architecture.layers import lm_head
from ..core import results_cache
from ..core.progress import progress_bar
from ..data.zero_shot_tasks import EVAL_SEED, EVAL_SET, Limit, MultipleChoiceItem, chance_level, load_tasks, task_limit

if TYPE_CHECKING:
    import pandas
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "SCORING_VERSION",
    "METRICS",
    "Metric",
    "EncodedRequest",
    "ItemResult",
    "ScoredItem",
    "TaskResult",
    "ZeroShotResult",
    "adds_bos",
    "max_context_length",
    "encode_requests",
    "score_requests",
    "score_items",
    "evaluate_zero_shot",
    "check_metric",
    "check_comparable",
    "RetentionUndefinedWarning",
    "retention",
    "above_chance_retention",
    "results_table",
]

#: Part of every cache key: bump it whenever a change here or in the benchmarks'
#: item handling could change a stored number, so no stale result is ever reused.
SCORING_VERSION = 3

#: A zero-shot metric: ``acc`` or ``acc_norm``.
Metric = Literal["acc", "acc_norm"]
#: The two metrics, as lm-eval names them.
METRICS: tuple[Metric, ...] = ("acc", "acc_norm")
AVERAGE = "average"  # the key of the macro average in retention() results

# lm-eval's context length when the model config names none (its HFLM default).
DEFAULT_MAX_LENGTH = 2048

# Tokens per forward pass of packed scoring (rows x the batch's width): on a CPU,
# smaller passes keep the activations and the logits of the kept positions in cache
# (measured on 2 cores, 60 HellaSwag items: 15.5 s with 16 rows of ~180 tokens per pass,
# 12.0 s with 4 rows).
PACKED_BATCH_TOKENS = 1024

# The length of a packed row (tokens): long enough that a row holds several short
# questions, short enough that attention over the whole row stays cheap. A longer
# question gets a row of its own.
PACKED_ROW_TOKENS = 256

# With prompt_nll=True every position's logits are needed: at most this many logits
# (positions x vocabulary) per forward pass, 128 MB in bfloat16. SmolLM2's 49k vocabulary
# keeps PACKED_BATCH_TOKENS per pass; Gemma 3's 262k cuts a pass to 256 tokens (one row).
PROMPT_NLL_LOGITS = 2**26

# The float32 log-softmax normaliser of many positions is computed this many logits at a
# time (64 MB), so a float32 copy of all the logits of a pass is never made.
LOGSUMEXP_CHUNK = 2**24


def check_metric(metric: str) -> None:
    """Refuse a ``metric`` that is not one of :data:`METRICS`."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")


# --- tokenisation --------------------------------------------------------------------

@dataclass(frozen=True)
class EncodedRequest:
    """The tokens of one request: context then continuation, already cut to the model's context."""

    tokens: tuple[int, ...]
    num_continuation: int  # the last ``num_continuation`` tokens are the scored continuation


def adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether ``tokenizer`` starts every encoding with its BOS token by default (Gemma: yes)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos] \
        and tokenizer("a", add_special_tokens=False)["input_ids"][:1] != [bos]


def max_context_length(model: nn.Module) -> int:
    """The longest input the model takes, from its config, as lm-eval finds it (default 2048)."""
    config = getattr(model, "config", None)
    for attribute in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_LENGTH


def encode_requests(tokenizer: PreTrainedTokenizerBase, requests: Sequence[tuple[str, str]],
                    max_length: int) -> list[EncodedRequest]:
    """Tokenise ``(context, continuation)`` pairs as lm-eval does (see the module docstring).

    Every input is cut on the left to ``max_length`` tokens (plus the last token,
    which is predicted but never fed to the model).
    """
    moved = []
    for context, continuation in requests:
        kept = context.rstrip()
        moved.append((kept, context[len(kept):] + continuation))
    contexts = tokenizer([context for context, _ in moved], add_special_tokens=False)["input_ids"]
    wholes = tokenizer([context + cont for context, cont in moved], add_special_tokens=False)["input_ids"]
    prefix = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
    empty_context = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    encoded = []
    for (context, continuation), context_ids, whole_ids in zip(moved, contexts, wholes):
        if context:
            context_ids = prefix + context_ids
            continuation_ids = (prefix + whole_ids)[len(context_ids):]
        else:  # lm-eval: nothing to condition on, so the context is one BOS/EOS token
            context_ids, continuation_ids = empty_context, whole_ids
        if not continuation_ids:
            raise ValueError(f"the continuation {continuation!r} of context {context[-60:]!r} has no "
                             "tokens of its own; every option needs a non-empty continuation")
        if len(continuation_ids) > max_length:
            raise ValueError(f"a continuation of {len(continuation_ids)} tokens does not fit the model's "
                             f"context of {max_length} tokens; shorten the option text")
        tokens = (context_ids + continuation_ids)[-(max_length + 1):]
        encoded.append(EncodedRequest(tuple(tokens), len(continuation_ids)))
    return encoded


# --- scoring -------------------------------------------------------------------------

@overload
def score_requests(model: nn.Module, requests: Sequence[EncodedRequest], batch_size: int = ...,
                   progress: bool = ..., desc: str = ..., share_prefix: bool = ...,
                   groups: Sequence[Sequence[int]] | None = ..., *, prompt_nll: Literal[False] = ...) -> list[float]:
    ...


@overload
def score_requests(model: nn.Module, requests: Sequence[EncodedRequest], batch_size: int = ...,
                   progress: bool = ..., desc: str = ..., share_prefix: bool = ...,
                   groups: Sequence[Sequence[int]] | None = ..., *,
                   prompt_nll: Literal[True]) -> tuple[list[float], list[float]]:
    ...


@torch.inference_mode()
def score_requests(model: nn.Module, requests: Sequence[EncodedRequest], batch_size: int = 16,
                   progress: bool = True, desc: str = "log-likelihood", share_prefix: bool = True,
                   groups: Sequence[Sequence[int]] | None = None, *,
                   prompt_nll: bool = False) -> list[float] | tuple[list[float], list[float]]:
    """``log P(continuation | context)`` of every request, in the order given.

    ``share_prefix=True`` (the default) runs the input prefix shared by a group of
    requests once, packed with other groups into rows without padding (see
    ``_score_packed``). ``groups`` lists the requests to share a prefix, e.g. the
    options of one question (WinoGrande's differ inside the context, yet share the
    sentence before the blank); by default, requests with the same context. ``share_prefix=False`` feeds every request whole, as
    lm-eval does (``_score_whole``); kept as the reference the benchmark and the
    tests compare with. Both give the same numbers up to float rounding. Models with
    sliding-window attention are scored whole when a packed context would be longer
    than the window, which one packed mask cannot express for all layers.
    The model is put in eval mode for the call and restored afterwards.

    ``prompt_nll=True`` returns ``(logliks, prompt_nll_sums)``: also, per request, the
    negative log-likelihood of its whole input, ``-sum log P(tokens[q + 1] | tokens[:q + 1])``
    over every predicted token of context and continuation (a sum: divide it by
    ``len(request.tokens)``, OpenCompass's count, for OpenCompass's "PPL"). It
    needs the LM head at every position: opt-in, and passes are made smaller so
    that their logits stay within ``PROMPT_NLL_LOGITS`` (2**26, 128 MB in bfloat16).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of rows, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        if share_prefix and _fits_window(model, requests):
            logliks, prompt = _score_packed(model, requests, groups, batch_size, progress, desc, prompt_nll)
        else:
            logliks, prompt = _score_whole(model, requests, batch_size, progress, desc, prompt_nll)
    finally:
        model.train(was_training)
    return (logliks, prompt) if prompt is not None else logliks


def _fits_window(model: nn.Module, requests: Sequence[EncodedRequest]) -> bool:
    """Whether every request is shorter than the model's sliding attention window, if it has one."""
    window = getattr(getattr(model, "config", None), "sliding_window", None)
    return not isinstance(window, int) or all(len(r.tokens) <= window for r in requests)


def continuation_logliks(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over positions of ``log_softmax(logits)[target]``, in float32: ``(rows, n, vocab) -> (rows,)``."""
    logprobs = logits.float().log_softmax(dim=-1)
    return logprobs.gather(-1, targets[..., None])[..., 0].sum(-1)


def _log_normaliser(logits: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over the vocabulary of each row of ``(n, vocab)`` logits, in float32, in chunks of rows."""
    step = max(1, LOGSUMEXP_CHUNK // logits.shape[-1])
    return torch.cat([logits[start:start + step].float().logsumexp(dim=-1) for start in range(0, len(logits), step)])


def _vocab_size(model: nn.Module) -> int:
    """The number of logits per position: the LM head's output size."""
    weight = getattr(lm_head(model), "weight", None)
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) else int(model.config.vocab_size)


def _prompt_nll_tokens(model: nn.Module) -> int:
    """Tokens per forward pass whose logits fit :data:`PROMPT_NLL_LOGITS` (at least 1)."""
    return max(1, PROMPT_NLL_LOGITS // _vocab_size(model))


def _score_whole(model: nn.Module, requests: Sequence[EncodedRequest], batch_size: int, progress: bool,
                 desc: str, prompt_nll: bool = False) -> tuple[list[float], list[float] | None]:
    """Every request as one right-padded row ``tokens[:-1]``, longest first.

    Requests with the same input (one-token options of one context, e.g. BoolQ's
    " no" / " yes") share one row, as lm-eval shares them. Only the logits of
    continuation positions are computed (``logits_to_keep``), or with
    ``prompt_nll`` those of every position, in passes of fewer rows.
    Returns the log-likelihoods and, with ``prompt_nll``, the whole-input NLL sums.
    """
    max_tokens = _prompt_nll_tokens(model) if prompt_nll else None
    rows, batches = whole_batches(requests, batch_size, max_tokens)
    device = next(model.parameters()).device
    scores = [0.0] * len(requests)
    prompt = [0.0] * len(requests) if prompt_nll else None
    for batch in progress_bar(batches, desc, enabled=progress):
        width = len(batch[0])
        input_ids, attention_mask = padded_rows(batch)
        # Logits at position p predict token p + 1, so a continuation of n tokens is predicted
        # from positions len(input) - n ... len(input) - 1. Keep logits from the earliest one.
        first = 0 if prompt_nll else min(len(ids) - requests[i].num_continuation for ids in batch for i in rows[ids])
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                       use_cache=False, logits_to_keep=width - first).logits
        for row, ids in enumerate(batch):
            if prompt is not None:  # every position of the row predicts the next token
                row_logits = logits[row, :len(ids)]
                normaliser = _log_normaliser(row_logits)
            for i in rows[ids]:
                n = requests[i].num_continuation
                start = len(ids) - n - first
                targets = torch.tensor(requests[i].tokens[-n:], device=logits.device)
                scores[i] = continuation_logliks(logits[row, start:start + n], targets).item()
                if prompt is not None:
                    targets = torch.tensor(requests[i].tokens[1:], device=logits.device)
                    picked = row_logits.gather(-1, targets[:, None])[:, 0].float() - normaliser
                    prompt[i] = -picked.double().sum().item()
    return scores, prompt


def padded_rows(batch: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows, longest first, right-padded with 0 to the first one's width, and their attention mask."""
    width = len(batch[0])
    input_ids = torch.zeros(len(batch), width, dtype=torch.long)
    attention_mask = torch.zeros(len(batch), width, dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention_mask[row, :len(ids)] = 1
    return input_ids, attention_mask


def whole_batches(requests: Sequence[EncodedRequest], batch_size: int, max_tokens: int | None = None
                   ) -> tuple[dict[tuple[int, ...], list[int]], list[list[tuple[int, ...]]]]:
    """The distinct model inputs (``tokens[:-1]``) with their requests, and the inputs in batches, longest first.

    A batch has at most ``batch_size`` rows and, if ``max_tokens`` is given, at most
    that many padded tokens (rows x its longest input), yet at least one row.
    """
    rows: dict[tuple[int, ...], list[int]] = {}  # model input (the last token is only predicted) -> requests
    for i, request in enumerate(requests):
        rows.setdefault(request.tokens[:-1], []).append(i)
    inputs = sorted(rows, key=len, reverse=True)
    if max_tokens is None:
        return rows, [inputs[start:start + batch_size] for start in range(0, len(inputs), batch_size)]
    batches: list[list[tuple[int, ...]]] = []
    for ids in inputs:  # longest first: a batch's first input sets its width
        if batches and len(batches[-1]) < batch_size and (len(batches[-1]) + 1) * len(batches[-1][0]) <= max_tokens:
            batches[-1].append(ids)
        else:
            batches.append([ids])
    return rows, batches


def _request_groups(requests: Sequence[EncodedRequest],
                    groups: Sequence[Sequence[int]] | None) -> list[Sequence[int]]:
    """The given groups, checked to cover every request once; by default requests with the same context."""
    if groups is None:
        by_context: dict[tuple[int, ...], list[int]] = {}
        for i, request in enumerate(requests):
            by_context.setdefault(request.tokens[:-request.num_continuation], []).append(i)
        return list(by_context.values())
    if sorted(i for group in groups for i in group) != list(range(len(requests))):
        raise ValueError("groups must list every request index exactly once")
    return [group for group in groups if group]


def _score_packed(model: nn.Module, requests: Sequence[EncodedRequest], groups: Sequence[Sequence[int]] | None,
                  batch_size: int, progress: bool, desc: str,
                  prompt_nll: bool = False) -> tuple[list[float], list[float] | None]:
    """Score requests packed as prefix trees: a shared prefix runs once, and almost no padding.

    A group of requests forms a *segment*: the longest input prefix they share (a
    question's context), then each request's own remaining input (its option; the
    continuation's last token is only predicted, never fed). A 4-D attention mask
    lets each request see the shared prefix and its own earlier tokens, not the other
    requests', and its position ids continue from the shared prefix, so each request
    is computed exactly as if fed alone. Segments are packed
    first-fit into rows of :data:`PACKED_ROW_TOKENS` tokens (a longer segment gets a
    row of its own; other segments in a row are masked out), up to ``batch_size`` rows
    and :data:`PACKED_BATCH_TOKENS` tokens per forward pass, each batch as wide as its
    longest row. A question of k options thus costs its context once instead of k
    times, and almost no padding. Rows stay short because attention and its mask grow
    with the square of a row's length.

    With ``prompt_nll`` every position's logits are kept, in passes of at most
    :data:`PROMPT_NLL_LOGITS` logits, and each request's whole-input NLL is summed
    too: the shared prefix's predictions of its own tokens are computed once per
    group and added to every request of the group; the prediction at the prefix's
    last position (of each request's first own token, which differs) and those in
    the request's branch are its own. Returns the log-likelihoods and, with
    ``prompt_nll``, the whole-input NLL sums.
    """
    members = _request_groups(requests, groups)
    max_tokens = min(PACKED_BATCH_TOKENS, _prompt_nll_tokens(model)) if prompt_nll else PACKED_BATCH_TOKENS
    batches = _packed_batches(requests, members, batch_size, max_tokens, prompt_nll)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    scores = torch.zeros(len(requests), dtype=torch.float64)
    # Whole-input NLL sums: one bucket per request (its own predictions), then one per group (the shared ones).
    buckets = torch.zeros(len(requests) + len(members), dtype=torch.float64) if prompt_nll else None
    for batch in progress_bar(batches, desc, enabled=progress):
        inputs = _PackedBatch.build(batch, max(_row_tokens(row) for row in batch))
        mask = torch.zeros(inputs.allowed.shape, dtype=dtype).masked_fill_(~inputs.allowed, torch.finfo(dtype).min)
        with _logits_only_at(model, inputs.keep.to(device)):
            logits = model(input_ids=inputs.input_ids.to(device), attention_mask=mask[:, None].to(device),
                           position_ids=inputs.position_ids.to(device), use_cache=False).logits[0]
        logsumexp = _log_normaliser(logits) if prompt_nll else logits.float().logsumexp(dim=-1)
        picked = logits[inputs.logit_rows.to(device), inputs.targets.to(device)].float()
        values = (picked - logsumexp[inputs.logit_rows.to(device)]).double().cpu()
        scores.index_add_(0, inputs.request_ids, values)
        if buckets is not None:
            prompt_rows = inputs.prompt_rows.to(device)
            picked = logits[prompt_rows, inputs.prompt_targets.to(device)].float()
            buckets.index_add_(0, inputs.prompt_buckets, (logsumexp[prompt_rows] - picked).double().cpu())
    if buckets is None:
        return scores.tolist(), None
    group_of = torch.empty(len(requests), dtype=torch.long)
    for g, group in enumerate(members):
        group_of[list(group)] = g
    return scores.tolist(), (buckets[:len(requests)] + buckets[len(requests) + group_of]).tolist()


def _packed_batches(requests: Sequence[EncodedRequest], groups: Sequence[Sequence[int]] | None,
                    batch_size: int, max_tokens: int = PACKED_BATCH_TOKENS,
                    prompt_nll: bool = False) -> list[list[list[_Segment]]]:
    """The requests' prefix-tree segments, packed into rows and the rows into forward passes.

    With ``prompt_nll`` the segment of the g-th group adds its shared predictions to
    bucket ``len(requests) + g`` (see ``_score_packed``). Rows are at most
    ``max_tokens`` long too (a pass holds at least one row), except a longer segment's own.
    """
    segments = [_Segment.build([requests[i] for i in members], members,
                               shared_bucket=len(requests) + g if prompt_nll else None)
                for g, members in enumerate(_request_groups(requests, groups))]
    rows = _pack(segments, min(PACKED_ROW_TOKENS, max_tokens))
    return _batches(rows, batch_size, max_tokens)  # longest rows first


@dataclass(frozen=True)
class _Segment:
    """Requests laid out as one prefix tree: their longest common input prefix, then each one's remainder."""

    tokens: tuple[int, ...]  # the shared prefix, then each request's input after it
    branches: tuple[int, ...]  # 0 for shared tokens, k for the k-th request's own tokens (1-based)
    positions: tuple[int, ...]  # position ids: each token's place in its request's own input
    predictions: tuple[tuple[int, int, int], ...]  # (offset whose logits predict, target token, request)
    # Whole-input NLL (prompt_nll): (offset whose logits predict, target token, bucket), every input position
    # once: the shared prefix's predictions of its own tokens go to the group's bucket, the others to the request's.
    prompt_predictions: tuple[tuple[int, int, int], ...] = ()

    @classmethod
    def build(cls, requests: Sequence[EncodedRequest], request_ids: Sequence[int],
              shared_bucket: int | None = None) -> _Segment:
        """The segment of ``requests``; with ``shared_bucket``, also their whole-input predictions."""
        inputs = [request.tokens[:-1] for request in requests]  # the last token is only predicted
        shared = len(os.path.commonprefix(inputs))
        tokens, branches, positions = list(inputs[0][:shared]), [0] * shared, list(range(shared))
        predictions = []
        # Positions q < shared - 1 predict a token of the shared prefix: the same for every request, scored once.
        prompt = [] if shared_bucket is None else [(q, inputs[0][q + 1], shared_bucket) for q in range(shared - 1)]
        for k, (request, request_id, ids) in enumerate(zip(requests, request_ids, inputs), start=1):
            branch_start = len(tokens) - shared  # offset of the request's position q >= shared is q + this
            tokens += ids[shared:]
            branches += [k] * (len(ids) - shared)
            positions += range(shared, len(ids))
            for q in range(len(ids) - request.num_continuation, len(ids)):
                offset = q if q < shared else q + branch_start
                predictions.append((offset, request.tokens[q + 1], request_id))
            if shared_bucket is not None:  # the prefix's last position predicts the request's own next token
                for q in range(max(shared - 1, 0), len(ids)):
                    prompt.append((q if q < shared else q + branch_start, request.tokens[q + 1], request_id))
        return cls(tuple(tokens), tuple(branches), tuple(positions), tuple(predictions), tuple(prompt))


def _row_tokens(row: Sequence[_Segment]) -> int:
    """Tokens of a packed row: the lengths of its segments."""
    return sum(len(segment.tokens) for segment in row)


def _batches(rows: list[list[_Segment]], max_rows: int, max_tokens: int) -> list[list[list[_Segment]]]:
    """Consecutive rows into batches of at most ``max_rows`` rows and ``max_tokens`` padded tokens (at least one row)."""
    batches: list[list[list[_Segment]]] = []
    width = 0
    for row in rows:
        length = _row_tokens(row)
        if batches and len(batches[-1]) < max_rows and (len(batches[-1]) + 1) * max(width, length) <= max_tokens:
            batches[-1].append(row)
            width = max(width, length)
        else:
            batches.append([row])
            width = length
    return batches


def _pack(segments: Sequence[_Segment], width: int) -> list[list[_Segment]]:
    """First-fit decreasing: longest segments first, each into the first row with room.

    A segment longer than ``width`` gets a row of its own, which nothing joins.
    """
    rows: list[list[_Segment]] = []
    free: list[int] = []
    for segment in sorted(segments, key=lambda s: len(s.tokens), reverse=True):
        for r, room in enumerate(free):
            if len(segment.tokens) <= room:
                rows[r].append(segment)
                free[r] -= len(segment.tokens)
                break
        else:
            rows.append([segment])
            free.append(width - len(segment.tokens))
    return rows


@dataclass(frozen=True)
class _PackedBatch:
    """The tensors of one forward pass over packed rows."""

    input_ids: torch.Tensor  # (rows, width)
    position_ids: torch.Tensor  # (rows, width)
    allowed: torch.Tensor  # (rows, width, width) bool: query position may attend to key position
    keep: torch.Tensor  # (rows, width) bool: positions whose logits are needed
    logit_rows: torch.Tensor  # (predictions,) index into the kept logits, row-major
    targets: torch.Tensor  # (predictions,) the token each prediction scores
    request_ids: torch.Tensor  # (predictions,) the request each prediction adds to
    # The segments' prompt_predictions (empty without prompt_nll), in the same form, into NLL buckets.
    prompt_rows: torch.Tensor
    prompt_targets: torch.Tensor
    prompt_buckets: torch.Tensor

    @classmethod
    def build(cls, rows: Sequence[Sequence[_Segment]], width: int) -> _PackedBatch:
        """The tensors of ``rows``; every segment position's logits are kept if a segment has prompt predictions."""
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)
        position_ids = torch.zeros(len(rows), width, dtype=torch.long)
        segment_of = torch.full((len(rows), width), -1, dtype=torch.long)  # -1: padding
        branch_of = torch.zeros(len(rows), width, dtype=torch.long)
        keep = torch.zeros(len(rows), width, dtype=torch.bool)
        predictions = []  # (row, position, target, request)
        prompt = []  # (row, position, target, bucket)
        for r, segments in enumerate(rows):
            offset = 0
            for s, segment in enumerate(segments):
                span = slice(offset, offset + len(segment.tokens))
                input_ids[r, span] = torch.tensor(segment.tokens)
                position_ids[r, span] = torch.tensor(segment.positions)
                segment_of[r, span] = s
                branch_of[r, span] = torch.tensor(segment.branches)
                predictions += [(r, offset + p, target, request) for p, target, request in segment.predictions]
                prompt += [(r, offset + p, target, bucket) for p, target, bucket in segment.prompt_predictions]
                offset += len(segment.tokens)
        query, key = (slice(None), slice(None), None), (slice(None), None, slice(None))
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        same_tree = (segment_of[query] == segment_of[key]) & (segment_of[query] >= 0)
        same_branch = (branch_of[key] == 0) | (branch_of[key] == branch_of[query])
        allowed = (same_tree & same_branch & causal) | torch.eye(width, dtype=torch.bool)  # padding sees itself
        if prompt:  # whole-input NLL: every token of every segment predicts the next one
            keep = segment_of >= 0
        for r, p, _, _ in predictions:
            keep[r, p] = True
        kept_index = keep.flatten().cumsum(0) - 1  # position in the kept logits, row-major
        flat = torch.tensor([r * width + p for r, p, _, _ in predictions])
        prompt_flat = torch.tensor([r * width + p for r, p, _, _ in prompt], dtype=torch.long)
        return cls(input_ids, position_ids, allowed, keep, kept_index[flat],
                   torch.tensor([t for _, _, t, _ in predictions]), torch.tensor([q for _, _, _, q in predictions]),
                   kept_index[prompt_flat], torch.tensor([t for _, _, t, _ in prompt], dtype=torch.long),
                   torch.tensor([b for _, _, _, b in prompt], dtype=torch.long))


@contextmanager
def _logits_only_at(model: nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """Within the block the LM head sees only the hidden states where ``keep`` (rows, width) is True.

    The model then returns logits of shape ``(1, keep.sum(), vocab)``, row after row:
    padded positions cost no LM-head product (a 49k-word vocabulary makes it a fifth of
    a small model's compute per token). A hook on the head rather than a call of the
    decoder and head by hand, so that whatever the architecture does after the head
    (e.g. Gemma's logit soft-capping) still happens.
    """

    def select(module: nn.Module, args: tuple) -> tuple:
        return (args[0][keep][None],) + args[1:]

    handle = lm_head(model).register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


# --- results -------------------------------------------------------------------------

def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first of ties, as numpy


@dataclass(frozen=True)
class ItemResult:
    """The scores of one item's options, and what follows from them.

    Stored: every option's log-likelihood, its number of continuation tokens and
    its length in characters (without lm-eval's leading delimiter space), and, when
    scored with ``prompt_nll=True``, ``prompt_nlls``: every option's mean token
    negative log-likelihood of the whole filled-in prompt (context and option), what
    OpenCompass calls "PPL" (the stability metric's input in its authors' form).
    Derived: per-option perplexity of the continuation, the ``acc`` and ``acc_norm``
    predictions and whether they are right.
    """

    task: str
    index: int  # the item's row in its dataset split
    gold: int
    logliks: tuple[float, ...]
    num_tokens: tuple[int, ...]
    num_chars: tuple[int, ...]
    prompt_nlls: tuple[float, ...] | None = None  # per option: whole-prompt NLL / its number of tokens

    def __post_init__(self) -> None:
        if not len(self.logliks) == len(self.num_tokens) == len(self.num_chars) >= 2:
            raise ValueError(f"{self.task}[{self.index}]: logliks, num_tokens and num_chars need one "
                             "entry per option (at least 2)")
        if self.prompt_nlls is not None and len(self.prompt_nlls) != len(self.logliks):
            raise ValueError(f"{self.task}[{self.index}]: prompt_nlls needs one entry per option")
        if not 0 <= self.gold < len(self.logliks):
            raise ValueError(f"{self.task}[{self.index}]: gold {self.gold} outside the options")

    @property
    def perplexities(self) -> tuple[float, ...]:
        """Per-option perplexity of the continuation, ``exp(-loglik / num_tokens)`` (the input of the
        stability metric's ``continuation_perplexity`` form)."""
        return tuple(math.exp(-ll / n) for ll, n in zip(self.logliks, self.num_tokens))

    @property
    def pred(self) -> int:
        """The ``acc`` answer: the option with the highest log-likelihood."""
        return _argmax(self.logliks)

    @property
    def pred_norm(self) -> int:
        """The ``acc_norm`` answer: the highest log-likelihood per character."""
        # An empty option text scores -inf, as lm-eval's numpy division by zero does.
        return _argmax([ll / c if c else -math.inf for ll, c in zip(self.logliks, self.num_chars)])

    @property
    def correct(self) -> bool:
        return self.pred == self.gold

    @property
    def correct_norm(self) -> bool:
        return self.pred_norm == self.gold

    def answer(self, metric: Metric = "acc") -> int:
        """The option chosen under ``metric``: :attr:`pred` for ``"acc"``, :attr:`pred_norm` for ``"acc_norm"``."""
        check_metric(metric)
        return self.pred if metric == "acc" else self.pred_norm

    def is_correct(self, metric: Metric = "acc") -> bool:
        """Whether the answer under ``metric`` (``"acc"`` or ``"acc_norm"``) is the gold one."""
        return self.answer(metric) == self.gold


# --- any item scored right or wrong: a multiple-choice ItemResult or a last-word result ---

@runtime_checkable
class ScoredItem(Protocol):
    """What accuracies, retention, paired comparisons and flips need of one scored item.

    :class:`ItemResult` (multiple choice) and
    :class:`~streamline_lib.evaluation.last_word.LastWordResult` (a passage's last word)
    both are one, so a :class:`TaskResult` holds either and a :class:`ZeroShotResult` can
    mix tasks of both kinds. Per-option scores (``logliks``, ``perplexities``: the
    stability metric's input) belong to multiple-choice items only.
    """

    task: str
    index: int  # the item's row in its dataset split: what pairs two models' results

    def answer(self, metric: Metric = "acc") -> Hashable:
        """The model's answer under ``metric`` (what :func:`~streamline_lib.evaluation.distance.flips` compares)."""
        ...

    def is_correct(self, metric: Metric = "acc") -> bool:
        """Whether the item is answered right under ``metric``."""
        ...


@dataclass(frozen=True)
class TaskResult:
    """One task's item results, accuracies and chance level."""

    task: str
    items: tuple[ScoredItem, ...]  # ItemResult for a multiple-choice task, LastWordResult for a last-word one
    chance: float  # mean over items of 1 / number of options (0 for a last word)

    @property
    def n(self) -> int:
        return len(self.items)

    def accuracy(self, metric: Metric = "acc") -> float:
        """Share of items answered right under ``metric`` (``"acc"`` or ``"acc_norm"``)."""
        check_metric(metric)
        return sum(item.is_correct(metric) for item in self.items) / self.n

    @property
    def acc(self) -> float:
        return self.accuracy("acc")

    @property
    def acc_norm(self) -> float:
        return self.accuracy("acc_norm")


@dataclass(frozen=True)
class ZeroShotResult:
    """Results on several tasks; averages are macro averages over tasks, as the papers report."""

    tasks: Mapping[str, TaskResult]
    limit: Limit
    seed: int | None

    def average(self, metric: Metric = "acc") -> float:
        """Mean over tasks of the per-task accuracy under ``metric``."""
        return sum(task.accuracy(metric) for task in self.tasks.values()) / len(self.tasks)

    @property
    def average_acc(self) -> float:
        return self.average("acc")

    @property
    def average_acc_norm(self) -> float:
        return self.average("acc_norm")

    @property
    def average_chance(self) -> float:
        return sum(task.chance for task in self.tasks.values()) / len(self.tasks)

    @property
    def items(self) -> tuple[ScoredItem, ...]:
        """Every item result, task after task (for the stability metric: of multiple-choice tasks)."""
        return tuple(item for task in self.tasks.values() for item in task.items)

    def subset(self, tasks: Iterable[str]) -> ZeroShotResult:
        """The results on ``tasks`` only, e.g. the tasks where the dense model is above chance."""
        tasks = list(tasks)
        unknown = [name for name in tasks if name not in self.tasks]
        if unknown or not tasks:
            raise ValueError(f"subset needs one or more of the evaluated tasks ({', '.join(self.tasks)}); "
                             f"got {tasks}")
        return ZeroShotResult({name: self.tasks[name] for name in tasks}, self.limit, self.seed)


def _item_results(items: Sequence[MultipleChoiceItem], encoded: Sequence[EncodedRequest],
                  logliks: Sequence[float], prompt_sums: Sequence[float] | None = None) -> tuple[ItemResult, ...]:
    """Group per-request scores (in ``item.requests()`` order) back into item results.

    ``prompt_sums``: per request, the NLL sum over its whole input (``score_requests(...,
    prompt_nll=True)``), divided here by its number of tokens as OpenCompass divides.
    """
    results, position = [], 0
    for item in items:
        options = range(position, position + len(item.choices))
        position = options.stop
        results.append(ItemResult(
            task=item.task, index=item.index, gold=item.gold,
            logliks=tuple(logliks[i] for i in options),
            num_tokens=tuple(encoded[i].num_continuation for i in options),
            num_chars=tuple(len(cont.removeprefix(" ")) for _, cont in item.requests()),
            prompt_nlls=None if prompt_sums is None else tuple(prompt_sums[i] / len(encoded[i].tokens)
                                                                for i in options),
        ))
    return tuple(results)


def _requests(items: Sequence[MultipleChoiceItem]) -> list[tuple[str, str]]:
    return [request for item in items for request in item.requests()]


def _option_groups(items: Sequence[MultipleChoiceItem]) -> list[range]:
    """The request indices of each item's options (requests are in ``_requests(items)`` order)."""
    groups, position = [], 0
    for item in items:
        groups.append(range(position, position + len(item.choices)))
        position += len(item.choices)
    return groups


def score_items(model: nn.Module, tokenizer: PreTrainedTokenizerBase, items: Sequence[MultipleChoiceItem],
                batch_size: int = 16, progress: bool = True, prompt_nll: bool = False) -> tuple[ItemResult, ...]:
    """Score any multiple-choice items (no cache): one :class:`ItemResult` per item.

    ``prompt_nll=True`` also fills :attr:`ItemResult.prompt_nlls` (costs the LM head
    at every position; see :func:`evaluate_zero_shot`).
    """
    encoded = encode_requests(tokenizer, _requests(items), max_context_length(model))
    plain = _scored_items(model, items, encoded, batch_size, progress, "log-likelihood", prompt_nll=False)
    if not prompt_nll:
        return plain
    return _with_prompt_nlls(plain, _scored_items(model, items, encoded, batch_size, progress, "prompt NLL",
                                                  prompt_nll=True))


def _scored_items(model: nn.Module, items: Sequence[MultipleChoiceItem], encoded: Sequence[EncodedRequest],
                  batch_size: int, progress: bool, desc: str, prompt_nll: bool) -> tuple[ItemResult, ...]:
    """One scoring pass over ``items``: plain, or with every option's whole-prompt NLL."""
    groups = _option_groups(items)
    if prompt_nll:
        return _item_results(items, encoded, *score_requests(model, encoded, batch_size, progress, desc=desc,
                                                             groups=groups, prompt_nll=True))
    return _item_results(items, encoded, score_requests(model, encoded, batch_size, progress, desc=desc, groups=groups))


def _with_prompt_nlls(plain: Sequence[ItemResult], with_nlls: Sequence[ItemResult]) -> tuple[ItemResult, ...]:
    """The plain pass's items with the prompt-NLL pass's ``prompt_nlls``.

    The prompt-NLL pass packs fewer tokens per forward pass, and in bfloat16 its log-likelihoods
    differ from the plain pass's by rounding: on SmolLM2, 49 of the dense model's 2,346 answers on
    the book's items changed. Asking for the NLLs must not change the answers, so the answers
    always come from the plain pass.
    """
    return tuple(replace(item, prompt_nlls=other.prompt_nlls) for item, other in zip(plain, with_nlls, strict=True))


# --- evaluation with the results cache ------------------------------------------------

def _item_to_json(item: ItemResult) -> dict[str, Any]:
    data = asdict(item)
    if data["prompt_nlls"] is None:  # left out, so entries without it read as they did before the field
        del data["prompt_nlls"]
    return data


def _task_to_json(result: TaskResult) -> dict[str, Any]:
    # acc, acc_norm and n are written for people reading the file; loading recomputes them.
    return {"task": result.task, "chance": result.chance, "n": result.n, "acc": result.acc,
            "acc_norm": result.acc_norm, "items": [_item_to_json(item) for item in result.items]}


def _task_from_json(data: dict[str, Any]) -> TaskResult:
    items = tuple(ItemResult(task=d["task"], index=d["index"], gold=d["gold"], logliks=tuple(d["logliks"]),
                             num_tokens=tuple(d["num_tokens"]), num_chars=tuple(d["num_chars"]),
                             prompt_nlls=None if d.get("prompt_nlls") is None else tuple(d["prompt_nlls"]))
                  for d in data["items"])
    return TaskResult(task=data["task"], items=items, chance=data["chance"])


def task_cache_key(model_fingerprint: str | None, task: str, limit: int | None, seed: int | None,
                   requests: Sequence[tuple[str, str]], encoded: Sequence[EncodedRequest]) -> dict[str, Any]:
    """The results-cache key of one task's scores, for every kind of task.

    Prompts and tokens are both keyed: the tokens cover the tokenizer, BOS and truncation;
    the strings cover ``acc_norm``'s character counts. A scorer adds its own entries.
    """
    return {"model": model_fingerprint, "task": task, "limit": limit, "seed": seed,
            "prompts": results_cache.fingerprint(requests),
            "tokens": results_cache.fingerprint([[e.tokens, e.num_continuation] for e in encoded]),
            "scoring_version": SCORING_VERSION}


def _evaluate_task(model: nn.Module, tokenizer: PreTrainedTokenizerBase, task: str,
                   items: Sequence[MultipleChoiceItem], limit: int | None, seed: int | None,
                   model_fingerprint: str | None, cache_folder: Path | None, batch_size: int,
                   progress: bool, prompt_nll: bool = False) -> TaskResult:
    """One task's scores; with ``prompt_nll`` the answers of the plain pass and the NLLs of the NLL pass
    (:func:`_with_prompt_nlls`), each pass cached under its own key."""
    requests = _requests(items)
    encoded = encode_requests(tokenizer, requests, max_context_length(model))
    args = (model, task, items, requests, encoded, limit, seed, model_fingerprint, cache_folder, batch_size, progress)
    plain = _scored_task(*args, prompt_nll=False)
    if not prompt_nll:
        return plain
    return TaskResult(task, _with_prompt_nlls(plain.items, _scored_task(*args, prompt_nll=True).items), plain.chance)


def _scored_task(model: nn.Module, task: str, items: Sequence[MultipleChoiceItem], requests: Sequence[tuple[str, str]],
                 encoded: Sequence[EncodedRequest], limit: int | None, seed: int | None,
                 model_fingerprint: str | None, cache_folder: Path | None, batch_size: int, progress: bool,
                 prompt_nll: bool) -> TaskResult:
    """One scoring pass of a task (plain, or with every option's prompt NLL), from the cache when there."""
    key = None
    if cache_folder is not None:
        key = task_cache_key(model_fingerprint, task, limit, seed, requests, encoded)
        if prompt_nll:  # only then, so that the keys of results scored without it stay as they were
            key["prompt_nll"] = True
        cached = results_cache.load_result(cache_folder, key, _task_from_json)
        if cached is not None:
            return cached
    result = TaskResult(task, _scored_items(model, items, encoded, batch_size, progress, task, prompt_nll),
                        chance_level(items))
    if key is not None:
        results_cache.store_result(cache_folder, key, _task_to_json(result))
    return result


#: Evaluators of the tasks whose items are not multiple choice, by item class. The module that
#: scores such a task registers its evaluator here when it is imported, so this module needs
#: no import of it (:mod:`streamline_lib.evaluation.last_word` registers LAMBADA's; importing
#: :mod:`streamline_lib.evaluation` imports it). An evaluator takes :func:`_evaluate_task`'s arguments.
TASK_EVALUATORS: dict[type, Callable[..., TaskResult]] = {}


def _evaluator(items: Sequence[Any]) -> Callable[..., TaskResult]:
    """The evaluator of one task's items: :func:`_evaluate_task` for multiple choice, else the registered one."""
    if not items or isinstance(items[0], MultipleChoiceItem):
        return _evaluate_task
    kind = type(items[0])
    if kind not in TASK_EVALUATORS:
        raise TypeError(f"no evaluator is registered for {kind.__name__} items; import the module that scores them")
    return TASK_EVALUATORS[kind]


def evaluate_zero_shot(model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                       tasks: str | Iterable[str] | None = None, limit: Limit = EVAL_SET,
                       seed: int | None = EVAL_SEED, batch_size: int = 16,
                       cache: bool | str | os.PathLike = False, progress: bool = True,
                       prompt_nll: bool = False) -> ZeroShotResult:
    """Zero-shot ``acc`` and ``acc_norm`` of ``model`` on benchmark tasks (default: the paper's eight).

    By default on the book's shared evaluation set
    (:data:`streamline_lib.data.zero_shot_tasks.EVAL_SET`, 2,346 items), so every model is
    scored on the same items and paired comparisons apply
    (:mod:`streamline_lib.evaluation.statistics`).

    :param tasks: task names from :data:`streamline_lib.data.zero_shot_tasks.TASKS`, or None for the paper's
        eight (:data:`~streamline_lib.data.zero_shot_tasks.PAPER_TASKS`). A last-word task (LAMBADA) is
        scored by :func:`streamline_lib.evaluation.last_word.evaluate_last_word_task` (greedy ``acc``;
        ``acc_norm == acc``), into the same result.
    :param limit: which items, as in :func:`streamline_lib.data.zero_shot_tasks.load_tasks`:
        one limit for every task or one per task, the first ``limit`` items or a
        random subset of that size drawn with ``seed``; ``limit=None``: every item.
    :param seed: see ``limit``.
    :param batch_size: at most this many rows per forward pass; changes speed, not results.
    :param cache: False, True or a folder, as in :mod:`streamline_lib.core.results_cache`:
        True or a folder reuses and keeps each task's scores there; False (the
        default) scores everything afresh.
    :param prompt_nll: also record every option's whole-prompt mean NLL
        (:attr:`ItemResult.prompt_nlls`), the input of the stability metric in its
        authors' form; only the dense model needs it. It computes the LM head at every
        position, not only the continuation's (for Gemma's 262k vocabulary more than
        the model's body). The answers still come from the plain pass, so that asking for the
        NLLs changes no answer (the NLL pass's bfloat16 rounding would change some); so the
        model is scored twice, each pass cached under its own key.
    """
    items_by_task = load_tasks(tasks, limit, seed)
    cache_folder = results_cache.cache_location(cache)
    model_fingerprint = results_cache.model_fingerprint(model) if cache_folder is not None else None
    results = {name: _evaluator(items)(model, tokenizer, name, items, task_limit(limit, name), seed, model_fingerprint,
                                       cache_folder, batch_size, progress, prompt_nll)
               for name, items in items_by_task.items()}
    return ZeroShotResult(results, limit, seed)


# --- comparing a pruned model with the dense one ---------------------------------------

def check_comparable(pruned: ZeroShotResult, dense: ZeroShotResult) -> None:
    """Refuse two results that did not score the same items of the same tasks (nothing to pair)."""
    if list(pruned.tasks) != list(dense.tasks):
        raise ValueError(f"the results cover different tasks ({', '.join(pruned.tasks)} vs "
                         f"{', '.join(dense.tasks)}); evaluate both models on the same tasks")
    for name in dense.tasks:
        if [i.index for i in pruned.tasks[name].items] != [i.index for i in dense.tasks[name].items]:
            raise ValueError(f"{name}: the two results scored different items; evaluate both models "
                             "with the same limit and seed")


class RetentionUndefinedWarning(RuntimeWarning):
    """A retention is NaN: the dense model's share to retain is not positive (at or below chance).

    Filter it by class, ``warnings.filterwarnings("ignore", category=RetentionUndefinedWarning)``;
    the message still reads ``"<what> is undefined: ..."``, so filters by message keep working.
    """


def _ratio(numerator: float, denominator: float, what: str) -> float:
    """``numerator / denominator``, or NaN with a :class:`RetentionUndefinedWarning` if the denominator is not > 0."""
    if denominator > 0:
        return numerator / denominator
    warnings.warn(f"{what} is undefined: the dense model's share to retain is {denominator:.4g}, not "
                  "positive (at or below chance); reporting NaN", RetentionUndefinedWarning, stacklevel=3)
    return math.nan


def retention(pruned: ZeroShotResult, dense: ZeroShotResult, metric: Metric = "acc") -> dict[str, float]:
    """Share of the dense accuracy kept: ``pruned / dense`` per task and on average.

    The ``"average"`` entry is the ratio of the macro-average accuracies (how the
    papers quote "retained performance", e.g. 54.1 / 59.7 = 90.6%), not the mean
    of the per-task ratios. Ratios above 1 are possible.
    """
    check_comparable(pruned, dense)
    values = {}
    for name, task in dense.tasks.items():  # a loop, not a comprehension: warnings point at the caller
        values[name] = _ratio(pruned.tasks[name].accuracy(metric), task.accuracy(metric), f"retention on {name}")
    values[AVERAGE] = _ratio(pruned.average(metric), dense.average(metric), "average retention")
    return values


def above_chance_retention(pruned: ZeroShotResult, dense: ZeroShotResult,
                           metric: Metric = "acc") -> dict[str, float]:
    """Share of the dense model's margin over chance that the pruned model keeps.

    ``(pruned - chance) / (dense - chance)`` per task (chance: the mean of
    1 / number of options over the items) and for the macro averages. Plain
    retention flatters a broken model on two-option tasks (guessing keeps 50% / 60%
    = 83% of a dense 60%); this measure gives it 0. NaN, with a warning, where the
    dense model is not above chance; noisy where it is barely above.
    """
    check_comparable(pruned, dense)
    values = {}
    for name, task in dense.tasks.items():
        values[name] = _ratio(pruned.tasks[name].accuracy(metric) - task.chance,
                              task.accuracy(metric) - task.chance, f"above-chance retention on {name}")
    values[AVERAGE] = _ratio(pruned.average(metric) - dense.average_chance,
                             dense.average(metric) - dense.average_chance, "average above-chance retention")
    return values


def results_table(results: Mapping[str, ZeroShotResult], metric: Metric = "acc") -> pandas.DataFrame:
    """Accuracy under ``metric`` of several models: one row per task plus the average,
    one column per model (the mapping's keys), and a ``chance`` column. Needs pandas
    (the ``book`` extra)."""
    import pandas

    check_metric(metric)
    if not results:
        raise ValueError("results_table() needs at least one result, e.g. {'dense': result}")
    first = next(iter(results.values()))
    for result in results.values():
        check_comparable(result, first)
    rows = list(first.tasks) + [AVERAGE]
    table = pandas.DataFrame(index=pandas.Index(rows, name="task"))
    for name, result in results.items():
        table[name] = [result.tasks[task].accuracy(metric) for task in first.tasks] + [result.average(metric)]
    table["chance"] = [task.chance for task in first.tasks.values()] + [first.average_chance]
    return table
