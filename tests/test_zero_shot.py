"""Zero-shot scoring as lm-eval does it, on a tiny random model and tokenizer (no data, no hub).

Covers the tokenisation of (context, continuation) pairs, log-likelihoods against a
direct unbatched computation, batch-size and padding invariance, acc vs acc_norm,
retention measures and the on-disk results cache.
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
)

from streamline_lib.core import results_cache
from streamline_lib.core.files import TEMPORARY_PREFIX
from streamline_lib.data.zero_shot_tasks import MultipleChoiceItem
from streamline_lib.evaluation import zero_shot
from streamline_lib.evaluation.zero_shot import (
    ItemResult,
    RetentionUndefinedWarning,
    TaskResult,
    ZeroShotResult,
    above_chance_retention,
    adds_bos,
    encode_requests,
    evaluate_zero_shot,
    max_context_length,
    results_table,
    retention,
    score_items,
    score_requests,
)

TEXT = [
    "Question: How do you boil an egg?\nAnswer: Put the egg in boiling water for eight minutes.",
    "The cat sat on the mat because the mat was warm and the floor was cold.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "To open a jar, twist the lid counterclockwise while holding the jar firmly.",
]


def _tokenizer(with_bos: bool) -> PreTrainedTokenizerFast:
    """A byte-level BPE (any text encodes, spaces join the next word as in GPT-2 / SmolLM2)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<eos>", "<bos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(TEXT, trainer)
    if with_bos:  # like Gemma's tokenizer: BOS in front of every encoding by default
        bpe.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", bos_token="<bos>")


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return _tokenizer(with_bos=False)


@pytest.fixture(scope="module")
def bos_tokenizer() -> PreTrainedTokenizerFast:
    return _tokenizer(with_bos=True)


def _model(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def model(tokenizer) -> LlamaForCausalLM:
    return _model(len(tokenizer))


REQUESTS = [
    ("Question: How do you boil an egg?\nAnswer:", " Put the egg in boiling water."),
    ("Question: How do you boil an egg?\nAnswer:", " Freeze it."),
    ("The cat sat on the", " mat"),
    ("Paris is the capital of France, and Berlin is the capital of Germany. To open a jar,", " twist the lid"),
    ("The floor was", " cold and the mat was warm because the cat sat on it all day long."),
]


def _direct_loglik(model, tokens: list[int], num_continuation: int) -> float:
    """Score one request on its own: no batch, no padding, no mask, full logits."""
    with torch.no_grad():
        logprobs = model(torch.tensor([tokens[:-1]])).logits[0].float().log_softmax(-1)
    start = len(tokens) - 1 - num_continuation
    return sum(logprobs[start + k, tokens[len(tokens) - num_continuation + k]].item()
               for k in range(num_continuation))


def _items() -> list[MultipleChoiceItem]:
    return [
        MultipleChoiceItem("toy", 0, "Question: How do you boil an egg?\nAnswer:",
                           (" Put the egg in boiling water.", " Freeze it."), 0),
        MultipleChoiceItem("toy", 1, "The cat sat on the", (" mat", " floor", " cat"), 1),
        MultipleChoiceItem("toy", 2, "The cat sat on", (" Paris", " the mat"), 1,
                           continuation=" because it was warm."),
    ]


# --- tokenisation ----------------------------------------------------------------------

def test_continuation_tokens_are_those_after_the_context_encoding(tokenizer):
    (request,) = encode_requests(tokenizer, [REQUESTS[0]], max_length=128)
    context_ids = tokenizer(REQUESTS[0][0], add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer(REQUESTS[0][0] + REQUESTS[0][1], add_special_tokens=False)["input_ids"]
    assert request.tokens == tuple(context_ids + whole_ids[len(context_ids):])
    assert request.num_continuation == len(whole_ids) - len(context_ids)
    assert tokenizer.decode(request.tokens[-request.num_continuation:]) == REQUESTS[0][1]


def test_trailing_context_whitespace_moves_to_the_continuation(tokenizer):
    moved, plain = encode_requests(tokenizer, [("The cat sat on the ", "mat"), ("The cat sat on the", " mat")],
                                   max_length=128)
    assert moved == plain


def test_bos_is_prepended_only_when_the_tokenizer_adds_it(tokenizer, bos_tokenizer):
    assert not adds_bos(tokenizer)
    assert adds_bos(bos_tokenizer)
    (plain,) = encode_requests(tokenizer, [REQUESTS[2]], max_length=128)
    (with_bos,) = encode_requests(bos_tokenizer, [REQUESTS[2]], max_length=128)
    assert with_bos.tokens == (bos_tokenizer.bos_token_id, *plain.tokens)
    assert with_bos.num_continuation == plain.num_continuation


def test_empty_context_becomes_the_bos_token(tokenizer):
    (request,) = encode_requests(tokenizer, [("", "The cat")], max_length=128)
    assert request.tokens == (tokenizer.bos_token_id, *tokenizer("The cat")["input_ids"])
    assert request.num_continuation == len(request.tokens) - 1


def test_long_inputs_are_cut_on_the_left_keeping_the_continuation(tokenizer):
    (full,) = encode_requests(tokenizer, [REQUESTS[3]], max_length=128)
    (cut,) = encode_requests(tokenizer, [REQUESTS[3]], max_length=8)
    assert len(full.tokens) > 9
    assert cut.tokens == full.tokens[-9:] and cut.num_continuation == full.num_continuation
    with pytest.raises(ValueError, match="does not fit the model's context of 2 tokens"):
        encode_requests(tokenizer, [REQUESTS[3]], max_length=2)


def test_an_option_without_tokens_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="no tokens of its own"):
        encode_requests(tokenizer, [("The cat", "")], max_length=128)


def test_max_context_length_reads_the_config(model):
    assert max_context_length(model) == 128
    assert max_context_length(torch.nn.Linear(2, 2)) == 2048  # lm-eval's default


# --- log-likelihoods -----------------------------------------------------------------------

@pytest.mark.parametrize("share_prefix", [True, False])
def test_logliks_equal_a_direct_unbatched_computation_at_any_batch_size(model, tokenizer, share_prefix):
    encoded = encode_requests(tokenizer, REQUESTS, max_length=128)
    direct = [_direct_loglik(model, list(e.tokens), e.num_continuation) for e in encoded]
    for batch_size in (1, 2, 3, 16):
        scores = score_requests(model, encoded, batch_size=batch_size, progress=False, share_prefix=share_prefix)
        assert scores == pytest.approx(direct, rel=1e-5, abs=1e-5), batch_size


def test_any_grouping_of_requests_gives_the_direct_scores(model, tokenizer):
    # WinoGrande-like: the options differ inside the context and share the sentence before them.
    requests = REQUESTS + [("The cat sat on the mat", " because it was warm."),
                           ("The cat sat on the floor", " because it was warm.")]
    encoded = encode_requests(tokenizer, requests, max_length=128)
    direct = [_direct_loglik(model, list(e.tokens), e.num_continuation) for e in encoded]
    for groups in ([[0, 1], [2], [3], [4], [5, 6]], [list(range(len(requests)))], [[6, 0], [1, 2, 3, 4, 5]]):
        scores = score_requests(model, encoded, batch_size=2, progress=False, groups=groups)
        assert scores == pytest.approx(direct, rel=1e-5, abs=1e-5), groups


def test_groups_must_cover_every_request_once(model, tokenizer):
    encoded = encode_requests(tokenizer, REQUESTS[:3], max_length=128)
    with pytest.raises(ValueError, match="every request index exactly once"):
        score_requests(model, encoded, progress=False, groups=[[0, 1], [1, 2]])


def test_a_shared_prefix_is_fed_once(tokenizer):
    (first, second) = encode_requests(tokenizer, REQUESTS[:2], max_length=128)
    segment = zero_shot._Segment.build([first, second], [0, 1])
    context = first.tokens[:-first.num_continuation]
    assert len(segment.tokens) == len(first.tokens) + len(second.tokens) - 2 - len(context)
    assert segment.tokens[:len(context)] == context and set(segment.branches[:len(context)]) == {0}
    assert [r for _, _, r in segment.predictions] == [0] * first.num_continuation + [1] * second.num_continuation


def test_packing_keeps_rows_and_passes_short(tokenizer):
    segments = [zero_shot._Segment.build([e], [i])
                for i, e in enumerate(encode_requests(tokenizer, REQUESTS, max_length=128))]
    lengths = {id(s): len(s.tokens) for s in segments}
    width = max(lengths.values()) // 2  # some segments are longer than a row: they get one alone
    rows = zero_shot._pack(segments, width)
    assert sorted(id(s) for row in rows for s in row) == sorted(lengths)  # every segment exactly once
    assert all(len(row) == 1 for row in rows if sum(lengths[id(s)] for s in row) > width)
    row_len = [sum(lengths[id(s)] for s in row) for row in rows]
    batches = zero_shot._batches(rows, max_rows=3, max_tokens=2 * width)
    assert [row for batch in batches for row in batch] == rows  # in order, none lost
    for batch in batches:
        widths = [row_len[rows.index(row)] for row in batch]
        assert len(batch) <= 3 and (len(batch) == 1 or len(batch) * max(widths) <= 2 * width)


def test_padding_does_not_change_a_score(model, tokenizer):
    short, long = encode_requests(tokenizer, [REQUESTS[2], REQUESTS[3]], max_length=128)
    assert len(long.tokens) > 2 * len(short.tokens)
    for share_prefix in (True, False):
        (alone,) = score_requests(model, [short], progress=False, share_prefix=share_prefix)
        padded, _ = score_requests(model, [short, long], batch_size=2, progress=False, share_prefix=share_prefix)
        assert padded == pytest.approx(alone, abs=1e-5)


def test_one_token_options_of_one_context_share_a_row(model, tokenizer):
    encoded = encode_requests(tokenizer, [("The cat sat on the", " mat"), ("The cat sat on the", " cat")], 128)
    assert [e.num_continuation for e in encoded] == [1, 1] and encoded[0].tokens[:-1] == encoded[1].tokens[:-1]
    shapes = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: shapes.append(kwargs["input_ids"].shape),
                                           with_kwargs=True)
    scores = score_requests(model, encoded, batch_size=4, progress=False, share_prefix=False)
    hook.remove()
    assert shapes == [(1, len(encoded[0].tokens) - 1)]
    assert scores == pytest.approx([_direct_loglik(model, list(e.tokens), 1) for e in encoded], abs=1e-5)


def test_sliding_window_models_are_scored_exactly(tokenizer):
    """A packed row longer than a sliding window would see too far back; such inputs are scored whole."""
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                           sliding_window=8)
    windowed = MistralForCausalLM(config).eval()
    encoded = encode_requests(tokenizer, REQUESTS, max_length=128)
    assert max(len(e.tokens) for e in encoded) > 8
    direct = [_direct_loglik(windowed, list(e.tokens), e.num_continuation) for e in encoded]
    assert score_requests(windowed, encoded, progress=False) == pytest.approx(direct, rel=1e-5, abs=1e-5)


def test_packed_scoring_matches_on_gemma3(tokenizer):
    """Gemma 3 (logit soft-capping, BOS, its own mask handling) packed as well as alone."""
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                              sliding_window=64, final_logit_softcapping=30.0)
    gemma = Gemma3ForCausalLM(config).eval()
    encoded = encode_requests(tokenizer, REQUESTS, max_length=128)
    direct = [_direct_loglik(gemma, list(e.tokens), e.num_continuation) for e in encoded]
    assert score_requests(gemma, encoded, batch_size=2, progress=False) == pytest.approx(direct, rel=1e-5, abs=1e-5)


def test_bfloat16_model_scores_close_to_float32(model, tokenizer):
    encoded = encode_requests(tokenizer, REQUESTS, max_length=128)
    full = score_requests(model, encoded, batch_size=2, progress=False)
    half = score_requests(copy.deepcopy(model).to(torch.bfloat16), encoded, batch_size=2, progress=False)
    assert half == pytest.approx(full, rel=0.05)


def test_scoring_restores_training_mode(model, tokenizer):
    model.train()
    score_requests(model, encode_requests(tokenizer, REQUESTS[:1], 128), progress=False)
    assert model.training


# --- whole-prompt NLL (OpenCompass's "PPL", the stability metric's authors' form) ------------

# WinoGrande-like pair: the options differ inside the context and share the sentence before them.
WINO_REQUESTS = [("The cat sat on the mat", " because it was warm."), ("The cat sat on the floor", " because it was warm.")]


def _direct_prompt_nll(model, tokens: list[int]) -> float:
    """-sum of log P over every predicted token of the whole input: one plain forward pass, full logits."""
    with torch.no_grad():
        logprobs = model(torch.tensor([tokens[:-1]])).logits[0].float().log_softmax(-1)
    return -sum(logprobs[q, tokens[q + 1]].item() for q in range(len(tokens) - 1))


def _gemma3(vocab_size: int) -> Gemma3ForCausalLM:
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                              sliding_window=64, final_logit_softcapping=30.0)
    return Gemma3ForCausalLM(config).eval()


@pytest.mark.parametrize("architecture", ["llama", "gemma3"])
def test_prompt_nll_packed_and_whole_equal_a_plain_forward_pass(tokenizer, architecture):
    model = _model(len(tokenizer)) if architecture == "llama" else _gemma3(len(tokenizer))
    encoded = encode_requests(tokenizer, REQUESTS + WINO_REQUESTS, max_length=128)
    direct = [_direct_prompt_nll(model, list(e.tokens)) for e in encoded]
    plain = score_requests(model, encoded, batch_size=2, progress=False)
    # Default groups (by context), options as groups (the WinoGrande pair shares only its opening), a group
    # without any common prefix, one group of everything.
    for groups in (None, [[0, 1], [2], [3], [4], [5, 6]], [[6, 0], [1, 2, 3, 4, 5]], [list(range(7))]):
        for share_prefix in (True, False):
            for batch_size in (1, 3):
                logliks, nlls = score_requests(model, encoded, batch_size=batch_size, progress=False,
                                               share_prefix=share_prefix, groups=groups, prompt_nll=True)
                assert nlls == pytest.approx(direct, rel=1e-5, abs=1e-5), (groups, share_prefix, batch_size)
                assert logliks == pytest.approx(plain, rel=1e-5, abs=1e-5), "logliks must not change"


def test_prompt_nll_of_a_group_counts_the_shared_prefix_once_for_each_request(model, tokenizer):
    first, second = encode_requests(tokenizer, WINO_REQUESTS, max_length=128)
    segment = zero_shot._Segment.build([first, second], [0, 1], shared_bucket=2)
    shared = len(os.path.commonprefix([first.tokens[:-1], second.tokens[:-1]]))
    assert 1 < shared < len(first.tokens) - first.num_continuation  # the options differ inside the context
    buckets = [b for _, _, b in segment.prompt_predictions]
    assert buckets.count(2) == shared - 1  # the prefix's own tokens: predicted once for the group
    # Each request: its first own token (from the prefix's last position), then every position of its branch.
    assert buckets.count(0) == len(first.tokens) - shared and buckets.count(1) == len(second.tokens) - shared
    assert zero_shot._Segment.build([first, second], [0, 1]).prompt_predictions == ()  # opt-in


def test_prompt_nll_passes_keep_their_logits_within_the_budget(model, tokenizer, monkeypatch):
    encoded = encode_requests(tokenizer, REQUESTS + WINO_REQUESTS, max_length=128)
    expected = score_requests(model, encoded, progress=False, prompt_nll=True)
    vocab = len(tokenizer)
    monkeypatch.setattr(zero_shot, "PROMPT_NLL_LOGITS", 40 * vocab)  # 40 tokens of logits per pass
    monkeypatch.setattr(zero_shot, "LOGSUMEXP_CHUNK", 3 * vocab)  # normalisers 3 positions at a time
    sizes = []
    hook = model.lm_head.register_forward_hook(lambda module, args, output: sizes.append(output.shape[:-1].numel()))
    for share_prefix in (True, False):
        sizes.clear()
        got = score_requests(model, encoded, batch_size=16, progress=False, share_prefix=share_prefix,
                             prompt_nll=True)
        assert got[0] == pytest.approx(expected[0], abs=1e-5) and got[1] == pytest.approx(expected[1], abs=1e-5)
        assert len(sizes) > 1 and max(sizes) <= 40, (share_prefix, sizes)
    hook.remove()


def test_prompt_nlls_of_items_are_opencompass_means_over_every_token(model, bos_tokenizer):
    # With BOS (as Gemma's tokenizer, or Llama's in the authors' runs): OpenCompass counts it, unpredicted.
    items = _items()  # a usual item, a three-option item, and a WinoGrande-style item (continuation set)
    results = score_items(model, bos_tokenizer, items, batch_size=2, progress=False, prompt_nll=True)
    encoded = encode_requests(bos_tokenizer, [r for item in items for r in item.requests()], 128)
    assert all(e.tokens[0] == bos_tokenizer.bos_token_id for e in encoded)
    by_hand = [_direct_prompt_nll(model, list(e.tokens)) / len(e.tokens) for e in encoded]
    assert [v for r in results for v in r.prompt_nlls] == pytest.approx(by_hand, rel=1e-5)
    # The two WinoGrande options score the same continuation, yet their whole prompts differ.
    assert results[2].prompt_nlls[0] != pytest.approx(results[2].prompt_nlls[1], rel=1e-3)
    plain = score_items(model, bos_tokenizer, items, batch_size=2, progress=False)
    assert all(r.prompt_nlls is None for r in plain)
    assert [r.logliks for r in results] == [pytest.approx(r.logliks, abs=1e-5) for r in plain]


# --- item results ----------------------------------------------------------------------

def test_acc_and_acc_norm_differ_on_a_hand_made_item():
    # Option 0: -4 over 2 characters = -2 per character; option 1: -6 over 10 = -0.6.
    item = ItemResult("toy", 0, gold=1, logliks=(-4.0, -6.0), num_tokens=(1, 3), num_chars=(2, 10))
    assert (item.pred, item.correct) == (0, False)
    assert (item.pred_norm, item.correct_norm) == (1, True)
    assert item.is_correct("acc") is False and item.is_correct("acc_norm") is True
    assert item.perplexities == pytest.approx((math.exp(4.0), math.exp(2.0)))
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        item.is_correct("f1")


def test_ties_go_to_the_first_option_and_bad_items_are_rejected():
    assert ItemResult("toy", 0, 1, (-1.0, -1.0), (1, 1), (1, 1)).pred == 0
    with pytest.raises(ValueError, match="one entry per option"):
        ItemResult("toy", 0, 0, (-1.0, -2.0), (1,), (1, 1))
    with pytest.raises(ValueError, match="gold 2 outside"):
        ItemResult("toy", 0, 2, (-1.0, -2.0), (1, 1), (1, 1))


def test_score_items_keeps_what_lm_eval_keeps(model, tokenizer):
    items = _items()
    results = score_items(model, tokenizer, items, batch_size=4, progress=False)
    encoded = encode_requests(tokenizer, [r for item in items for r in item.requests()], 128)
    direct = [_direct_loglik(model, list(e.tokens), e.num_continuation) for e in encoded]
    assert [ll for r in results for ll in r.logliks] == pytest.approx(direct, rel=1e-5, abs=1e-5)
    assert [n for r in results for n in r.num_tokens] == [e.num_continuation for e in encoded]
    # Character lengths leave out the single delimiter space lm-eval puts before each option.
    assert results[0].num_chars == (len("Put the egg in boiling water."), len("Freeze it."))
    assert results[1].num_chars == (3, 5, 3)
    # WinoGrande form: every option scores the same continuation, so acc_norm == acc.
    assert results[2].num_chars == (len("because it was warm."),) * 2
    assert results[2].pred_norm == results[2].pred
    assert [(r.task, r.index, r.gold) for r in results] == [("toy", 0, 0), ("toy", 1, 1), ("toy", 2, 1)]


# --- accuracies and retention on hand numbers -----------------------------------------------

def _task(name: str, correct: list[bool], options: int = 2) -> TaskResult:
    """Items whose acc (and acc_norm: equal lengths) answers are right exactly where ``correct`` says."""
    items = tuple(ItemResult(name, i, gold=0 if right else 1, logliks=(-1.0,) + (-2.0,) * (options - 1),
                             num_tokens=(1,) * options, num_chars=(1,) * options)
                  for i, right in enumerate(correct))
    return TaskResult(name, items, chance=1 / options)


def _result(**tasks: TaskResult) -> ZeroShotResult:
    return ZeroShotResult(tasks, limit=None, seed=None)


def test_accuracies_and_macro_averages():
    result = _result(a=_task("a", [True, True, True, False]), b=_task("b", [True, False], options=4))
    assert result.tasks["a"].acc == 0.75 and result.tasks["a"].acc_norm == 0.75 and result.tasks["a"].n == 4
    assert result.average_acc == pytest.approx((0.75 + 0.5) / 2)  # per task, not per item
    assert result.average_chance == pytest.approx((0.5 + 0.25) / 2)
    assert len(result.items) == 6


def test_retention_and_above_chance_retention_on_hand_numbers():
    dense = _result(a=_task("a", [True, True, True, False]), b=_task("b", [True, True, False, False], options=4))
    pruned = _result(a=_task("a", [True, False, True, False]), b=_task("b", [True, False, False, False], options=4))
    # a: dense 0.75, pruned 0.5, chance 0.5. b: dense 0.5, pruned 0.25, chance 0.25.
    assert retention(pruned, dense) == pytest.approx({"a": 0.5 / 0.75, "b": 0.5, "average": 0.375 / 0.625})
    assert above_chance_retention(pruned, dense) == pytest.approx(
        {"a": 0.0, "b": 0.0, "average": (0.375 - 0.375) / (0.625 - 0.375)})
    better = _result(a=_task("a", [True] * 4), b=_task("b", [True, True, True, False], options=4))
    assert above_chance_retention(better, dense)["b"] == pytest.approx((0.75 - 0.25) / (0.5 - 0.25))


def test_above_chance_retention_is_nan_when_dense_is_at_chance():
    dense = _result(a=_task("a", [True, False]))
    with pytest.warns(RetentionUndefinedWarning) as caught:
        values = above_chance_retention(_result(a=_task("a", [True, True])), dense)
    assert [str(w.message).split(" is undefined")[0] for w in caught] == [
        "above-chance retention on a", "average above-chance retention"]
    assert all(w.filename == __file__ for w in caught), "warnings point at the caller's line"
    assert math.isnan(values["a"]) and math.isnan(values["average"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert retention(_result(a=_task("a", [True, True])), dense)["a"] == 2.0


def test_undefined_retention_is_filtered_by_its_class_or_by_the_notebooks_message():
    dense, pruned = _result(a=_task("a", [True, False])), _result(a=_task("a", [True, True]))
    assert issubclass(RetentionUndefinedWarning, RuntimeWarning)  # filters of RuntimeWarning still catch it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=RetentionUndefinedWarning)
        above_chance_retention(pruned, dense)
    assert caught == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message=r".*retention on .* is undefined")  # the notebooks' filter
        above_chance_retention(pruned, dense)
    assert [str(w.message).split(" is undefined")[0] for w in caught] == ["average above-chance retention"]


def test_retention_needs_the_same_tasks_and_items():
    dense = _result(a=_task("a", [True, False]))
    with pytest.raises(ValueError, match="different tasks"):
        retention(_result(b=_task("b", [True, False])), dense)
    with pytest.raises(ValueError, match="a: the two results scored different items"):
        retention(_result(a=_task("a", [True, False, True])), dense)


def test_results_table():
    pytest.importorskip("pandas")
    dense = _result(a=_task("a", [True, True, True, False]), b=_task("b", [True, False], options=4))
    pruned = _result(a=_task("a", [True, False, True, False]), b=_task("b", [False, False], options=4))
    table = results_table({"dense": dense, "pruned": pruned})
    assert list(table.index) == ["a", "b", "average"]
    assert list(table.columns) == ["dense", "pruned", "chance"]
    assert table.loc["average", "pruned"] == pytest.approx(0.25)
    assert table.loc["b", "chance"] == 0.25


# --- evaluate_zero_shot and the results cache ---------------------------------------------

@pytest.fixture
def toy_tasks(monkeypatch):
    """evaluate_zero_shot on hand-made items instead of the bundled benchmark data."""
    def load_tasks(names, limit, seed):
        return {"toy": _items()[:limit]}
    monkeypatch.setattr(zero_shot, "load_tasks", load_tasks)


def _count_forward_calls(model) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda module, args: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_evaluate_zero_shot_matches_score_items(model, tokenizer, toy_tasks):
    result = evaluate_zero_shot(model, tokenizer, limit=3, batch_size=2, cache=False, progress=False)
    assert list(result.tasks) == ["toy"] and result.limit == 3
    direct = score_items(model, tokenizer, _items(), progress=False)
    assert [r.logliks for r in result.tasks["toy"].items] == [pytest.approx(r.logliks, abs=1e-5) for r in direct]
    assert result.tasks["toy"].chance == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)


def test_cache_hit_skips_the_model_and_a_changed_weight_misses(model, tokenizer, toy_tasks, tmp_path):
    calls = _count_forward_calls(model)
    first = evaluate_zero_shot(model, tokenizer, limit=3, cache=tmp_path, progress=False)
    assert calls[0] > 0 and len(list(tmp_path.glob("*.json"))) == 1
    calls[0] = 0
    again = evaluate_zero_shot(model, tokenizer, limit=3, cache=tmp_path, progress=False)
    assert calls[0] == 0, "a cached result must not run the model"
    assert again.tasks["toy"] == first.tasks["toy"]  # exact: floats survive JSON unchanged
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 0.01
    evaluate_zero_shot(model, tokenizer, limit=3, cache=tmp_path, progress=False)
    assert calls[0] > 0, "a changed model must not reuse the old entry"
    assert len(list(tmp_path.glob("*.json"))) == 2
    calls[0] = 0
    evaluate_zero_shot(model, tokenizer, limit=2, cache=tmp_path, progress=False)
    assert calls[0] > 0, "other items are another entry"


def test_cache_key_covers_the_tokenizer(model, tokenizer, bos_tokenizer, toy_tasks, tmp_path):
    evaluate_zero_shot(model, tokenizer, limit=3, cache=tmp_path, progress=False)
    calls = _count_forward_calls(model)
    evaluate_zero_shot(model, bos_tokenizer, limit=3, cache=tmp_path, progress=False)
    assert calls[0] > 0


def test_prompt_nlls_round_trip_the_cache_under_their_own_key(model, tokenizer, toy_tasks, tmp_path):
    plain = evaluate_zero_shot(model, tokenizer, limit=3, cache=tmp_path, progress=False)
    (plain_path,) = tmp_path.glob("*.json")
    plain_stored = json.loads(plain_path.read_text())
    # Without prompt_nll the key and the items are exactly what they were before the option existed.
    assert set(plain_stored["key"]) == {"model", "task", "limit", "seed", "prompts", "tokens", "scoring_version"}
    assert all(set(item) == {"task", "index", "gold", "logliks", "num_tokens", "num_chars"}
               for item in plain_stored["result"]["items"])
    assert all(item.prompt_nlls is None for item in plain.tasks["toy"].items)

    calls = _count_forward_calls(model)
    first = evaluate_zero_shot(model, tokenizer, limit=3, cache=tmp_path, progress=False, prompt_nll=True)
    assert calls[0] > 0, "a result without prompt NLLs must not answer a request for them"
    (prompt_path,) = set(tmp_path.glob("*.json")) - {plain_path}
    stored = json.loads(prompt_path.read_text())
    assert stored["key"] == {**plain_stored["key"], "prompt_nll": True}  # the only difference
    direct = score_items(model, tokenizer, _items(), progress=False, prompt_nll=True)
    assert [r.prompt_nlls for r in first.tasks["toy"].items] == [pytest.approx(r.prompt_nlls) for r in direct]
    calls[0] = 0
    again = evaluate_zero_shot(model, tokenizer, limit=3, cache=tmp_path, progress=False, prompt_nll=True)
    assert calls[0] == 0 and again.tasks["toy"] == first.tasks["toy"]  # exact, prompt_nlls included
    again = evaluate_zero_shot(model, tokenizer, limit=3, cache=tmp_path, progress=False)
    assert calls[0] == 0 and again.tasks["toy"] == plain.tasks["toy"], "the plain entry is still used"


def test_asking_for_prompt_nlls_changes_no_answer(model, tokenizer, toy_tasks, monkeypatch):
    """The prompt-NLL pass packs fewer tokens per pass, and in bfloat16 its log-likelihoods differ by rounding
    (49 of SmolLM2's 2,346 dense answers changed): the answers must come from the plain pass. Here the NLL pass's
    log-likelihoods are made to prefer each item's last option; not one answer may follow them."""
    real = zero_shot.score_requests

    def nll_pass_prefers_the_last_option(model, requests, *args, prompt_nll=False, **kwargs):
        if not prompt_nll:
            return real(model, requests, *args, **kwargs)
        _, nlls = real(model, requests, *args, prompt_nll=True, **kwargs)
        return [float(i) for i in range(len(requests))], nlls  # rising within every item

    plain_items = score_items(model, tokenizer, _items(), progress=False)
    plain = evaluate_zero_shot(model, tokenizer, limit=3, cache=False, progress=False)
    monkeypatch.setattr(zero_shot, "score_requests", nll_pass_prefers_the_last_option)
    items = score_items(model, tokenizer, _items(), progress=False, prompt_nll=True)
    result = evaluate_zero_shot(model, tokenizer, limit=3, cache=False, progress=False, prompt_nll=True)
    assert [r.pred for r in plain_items] != [len(r.logliks) - 1 for r in plain_items], "the check needs other answers"
    assert [r.logliks for r in items] == [r.logliks for r in plain_items]
    assert [r.logliks for r in result.tasks["toy"].items] == [r.logliks for r in plain.tasks["toy"].items]
    assert all(r.prompt_nlls is not None for r in items + result.tasks["toy"].items)


def test_item_results_check_their_prompt_nlls():
    item = ItemResult("toy", 0, 1, (-1.0, -2.0), (1, 1), (1, 1), prompt_nlls=(3.0, 2.5))
    assert zero_shot._task_from_json(zero_shot._task_to_json(TaskResult("toy", (item,), 0.5))).items == (item,)
    with pytest.raises(ValueError, match="prompt_nlls needs one entry per option"):
        ItemResult("toy", 0, 0, (-1.0, -2.0), (1, 1), (1, 1), prompt_nlls=(3.0,))


def test_corrupt_cache_file_is_ignored_and_rewritten(model, tokenizer, toy_tasks, tmp_path):
    first = evaluate_zero_shot(model, tokenizer, limit=3, cache=tmp_path, progress=False)
    (path,) = tmp_path.glob("*.json")
    stored = json.loads(path.read_text())
    assert stored["key"]["task"] == "toy" and stored["result"]["acc"] == first.tasks["toy"].acc
    for damage in ('{"key": {"task": "to', json.dumps({"key": stored["key"], "result": {"items": [{}]}})):
        path.write_text(damage)
        with pytest.warns(RuntimeWarning, match="ignoring the unusable cached result"):
            again = evaluate_zero_shot(model, tokenizer, limit=3, cache=tmp_path, progress=False)
        assert again.tasks["toy"] == first.tasks["toy"]
        assert json.loads(path.read_text()) == stored
    assert not list(tmp_path.glob(f"{TEMPORARY_PREFIX}*")), "no temporary files left behind"


def _empty_the_items(result: dict) -> None:
    result["items"] = []


def _make_a_wrong_option_win(result: dict) -> None:
    item = next(item for item in result["items"] if item["gold"] != 0)
    item["logliks"][0] = 0.0  # the best possible log-likelihood, for a wrong option


@pytest.mark.parametrize("edit", [_empty_the_items, _make_a_wrong_option_win])
def test_an_edited_cache_entry_is_recomputed(model, tokenizer, toy_tasks, tmp_path, edit):
    first = evaluate_zero_shot(model, tokenizer, limit=3, cache=tmp_path, progress=False)
    (path,) = tmp_path.glob("*.json")
    stored = json.loads(path.read_text())
    edited = copy.deepcopy(stored)
    edit(edited["result"])
    path.write_text(json.dumps(edited, indent=1))
    calls = _count_forward_calls(model)
    with pytest.warns(RuntimeWarning, match="does not match the sha256 stored with it") as caught:
        again = evaluate_zero_shot(model, tokenizer, limit=3, cache=tmp_path, progress=False)
    assert len(caught) == 1 and calls[0] > 0, "recomputed, with one warning"
    assert again.tasks["toy"] == first.tasks["toy"]
    assert json.loads(path.read_text()) == stored


def test_model_fingerprint_sees_weights_buffers_dtype_and_config(model):
    base = results_cache.model_fingerprint(model)
    assert results_cache.model_fingerprint(copy.deepcopy(model)) == base
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.lm_head.weight[3, 4] += 1e-3
    assert results_cache.model_fingerprint(changed) != base
    changed = copy.deepcopy(model)
    changed.model.rotary_emb.inv_freq[0] += 1e-3  # a buffer, not a parameter
    assert results_cache.model_fingerprint(changed) != base
    assert results_cache.model_fingerprint(copy.deepcopy(model).to(torch.bfloat16)) != base
    changed = copy.deepcopy(model)
    changed.config.rms_norm_eps = 1e-3
    assert results_cache.model_fingerprint(changed) != base
    changed = copy.deepcopy(model)
    changed.config._name_or_path = "/somewhere/else"  # where it came from does not matter
    assert results_cache.model_fingerprint(changed) == base


def test_store_and_load_result_round_trip(tmp_path):
    key = {"task": "toy", "tokens": (1, 2)}
    path = results_cache.store_result(tmp_path, key, {"value": [1.5, 2]})
    assert path.parent == tmp_path
    assert results_cache.load_result(tmp_path, key, dict) == {"value": [1.5, 2]}
    assert results_cache.load_result(tmp_path, {"task": "other"}, dict) is None

