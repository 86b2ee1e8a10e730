"""Tests of the bundled text corpora, their non-overlapping splits, the token windows, and the check of
token ids against a model's vocabulary."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from helpers import FAST, VOCAB, random_tokens, tiny_llama
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from streamline_lib.data.text_data import (
    CORPORA,
    SPLITS,
    available_sequences,
    check_token_ids,
    documents,
    split_documents,
    token_sequences,
    token_sequences_from_text,
)
from streamline_lib.evaluation import perplexity
from streamline_lib.methods.healing import heal_with_lora
from streamline_lib.methods.pruning import prune
from streamline_lib.methods.scoring import collect_stats
from streamline_lib.methods.training import TrainConfig


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A small byte-level BPE (no unknown tokens) trained on a few KB of the wiki corpus."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(documents("wiki")[:20], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")


@pytest.mark.parametrize("corpus", list(CORPORA))
def test_every_corpus_loads_clean_distinct_documents(corpus):
    docs = documents(corpus)
    assert len(docs) > 50
    assert all(doc.strip() for doc in docs)
    assert len(set(docs)) == len(docs)


def test_wiki_headers_are_stripped():
    docs = documents("wiki")
    assert not any(line.startswith("<doc") for doc in docs for line in doc.split("\n"))
    assert not any("</doc>" in doc for doc in docs)
    assert docs[0].startswith("2007 European Parliament election in Romania\n")


@pytest.mark.parametrize("corpus", list(CORPORA))
def test_splits_are_disjoint_and_cover_the_corpus(corpus):
    parts = {split: split_documents(corpus, split) for split in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not set(parts[a]) & set(parts[b]), f"{corpus}: {a} and {b} share documents"
    together = Counter(doc for docs in parts.values() for doc in docs)
    assert together == Counter(documents(corpus))
    assert all(parts.values())


def test_split_is_deterministic_and_pinned():
    """Counts and first documents computed once: the split must not move between runs.

    It is built from SHA-256 digests, so it cannot depend on PYTHONHASHSEED.
    """
    first = {split: split_documents("wiki", split) for split in SPLITS}
    assert first == {split: split_documents("wiki", split) for split in SPLITS}
    counts = {corpus: [len(split_documents(corpus, s)) for s in SPLITS] for corpus in CORPORA}
    assert counts == {
        "wiki": [219, 657, 219],
        "c4": [23, 67, 23],
        "stories": [63, 191, 63],
        "code": [41, 125, 41],
        "technical": [29, 86, 29],
        "multilingual": [16, 50, 16],
    }
    assert {split: docs[0][:40] for split, docs in first.items()} == PINNED_WIKI_FIRST


PINNED_WIKI_FIRST = {
    "calibration": "V Centauri\n\nV Centauri (V Cen) is a Clas",
    "train": "2007 European Parliament election in Rom",
    "heldout": "Alfred Desenclos\n\nAlfred Desenclos (7 Fe",
}


def test_token_sequences_shape_dtype_and_seed(tokenizer):
    a = token_sequences(tokenizer, "wiki", "calibration", num_seqs=8, seq_len=64, seed=0, max_length=128)
    assert a.shape == (8, 64)
    assert a.dtype == torch.long
    assert torch.equal(a, token_sequences(tokenizer, "wiki", "calibration", num_seqs=8, seq_len=64, seed=0))
    assert not torch.equal(a, token_sequences(tokenizer, "wiki", "calibration", num_seqs=8, seq_len=64, seed=1))


def test_windows_of_different_splits_never_coincide(tokenizer):
    """No token window of one split appears in another.

    The guarantee is per document: at 64 tokens two different sea-snail stubs
    ("... marine gastropod mollusk in the family Costellariidae ...") in different
    splits do share one boilerplate window, so this check uses 128-token windows.
    """
    rows = {
        split: {tuple(row) for row in token_sequences(tokenizer, "wiki", split, num_seqs=None, seq_len=128).tolist()}
        for split in SPLITS
    }
    assert all(rows.values())
    assert not rows["calibration"] & rows["train"]
    assert not rows["calibration"] & rows["heldout"]
    assert not rows["train"] & rows["heldout"]


def test_documents_are_joined_by_eos_without_bos(tokenizer):
    first = tokenizer("The first one.", add_special_tokens=False)["input_ids"]
    second = tokenizer("A second one.", add_special_tokens=False)["input_ids"]
    (row,) = token_sequences_from_text(tokenizer, ["The first one.", "  ", "A second one."], len(first) + 1 + len(second))
    assert row.tolist() == first + [tokenizer.eos_token_id] + second


def test_token_sequences_from_text_takes_all_windows_by_default(tokenizer):
    text = " ".join(documents("stories")[:5])
    n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    out = token_sequences_from_text(tokenizer, text, seq_len=32)
    assert out.shape == (n_tokens // 32, 32)
    picked = token_sequences_from_text(tokenizer, [text], seq_len=32, num_seqs=3, seed=5)
    assert picked.shape == (3, 32)
    assert {tuple(r) for r in picked.tolist()} <= {tuple(r) for r in out.tolist()}


def test_unknown_corpus_and_split(tokenizer):
    with pytest.raises(ValueError, match=r"unknown corpus 'wikipedia'.*wiki, c4, stories"):
        documents("wikipedia")
    with pytest.raises(ValueError, match="unknown corpus 'nope'"):
        token_sequences(tokenizer, "nope")
    with pytest.raises(ValueError, match=r"unknown split 'test'.*calibration, train, heldout"):
        split_documents("wiki", "test")
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        token_sequences(tokenizer, "wiki", "validation")


def test_bad_seq_len(tokenizer):
    with pytest.raises(ValueError, match=r"seq_len=1 .*at least 2"):
        token_sequences(tokenizer, seq_len=1)
    with pytest.raises(ValueError, match=r"seq_len=4096 .*max_length=2048"):
        token_sequences(tokenizer, seq_len=4096, max_length=2048)
    with pytest.raises(ValueError, match=r"seq_len=1 "):
        token_sequences_from_text(tokenizer, ["some text"], seq_len=1)


def test_too_many_sequences_says_how_many_there_are(tokenizer):
    available = len(token_sequences(tokenizer, "technical", "heldout", num_seqs=None, seq_len=512))
    assert available_sequences(tokenizer, "technical", "heldout", seq_len=512) == available
    assert len(token_sequences(tokenizer, "technical", "heldout", num_seqs=available, seq_len=512)) == available
    with pytest.raises(ValueError, match="seq_len=1 is too short"):
        available_sequences(tokenizer, "technical", "heldout", seq_len=1)
    with pytest.raises(ValueError, match=rf"'technical'.*'heldout'.*only {available} windows of seq_len=512"):
        token_sequences(tokenizer, "technical", "heldout", num_seqs=available + 1, seq_len=512)
    with pytest.raises(ValueError, match="only 0 windows"):
        token_sequences_from_text(tokenizer, ["short"], seq_len=64, num_seqs=1)
    with pytest.raises(ValueError, match="fewer than one window"):
        token_sequences_from_text(tokenizer, ["short"], seq_len=64)


@pytest.mark.parametrize("texts", [[], [""], ["  ", "\n\t"], ""])
def test_empty_text(tokenizer, texts):
    with pytest.raises(ValueError, match="calibration text is empty.*non-empty"):
        token_sequences_from_text(tokenizer, texts, seq_len=16)


def test_tokenizer_without_eos_is_rejected(tokenizer):
    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()))
    with pytest.raises(ValueError, match="no eos token"):
        token_sequences_from_text(bare, ["some text"], seq_len=2)


def test_corpus_cache_is_per_tokenizer(tokenizer):
    """Two tokenizers with the same (empty) name must not share cached token streams."""
    copy = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    other = PreTrainedTokenizerFast(tokenizer_object=copy, eos_token="<eos>")
    other.add_tokens(["Vexillum"])
    mine = token_sequences(tokenizer, "wiki", "heldout", num_seqs=None, seq_len=64)
    theirs = token_sequences(other, "wiki", "heldout", num_seqs=None, seq_len=64)
    assert mine.shape != theirs.shape


@pytest.mark.parametrize("bad_id", [-1, VOCAB])
@pytest.mark.parametrize("use", [
    check_token_ids,
    lambda model, seqs: collect_stats(model, seqs, progress=False),
    lambda model, seqs: perplexity(model, seqs, progress=False),
    lambda model, seqs: prune(model, 2, 2, replacement="ffn", train_sequences=seqs, train_config=TrainConfig(**FAST)),
    lambda model, seqs: prune(model, 2, 2, replacement="linear", train_sequences=seqs,
                              train_config=TrainConfig(**FAST)),
    lambda model, seqs: heal_with_lora(model, seqs, config=TrainConfig(**{**FAST, "loss": "lm"})),
], ids=["check", "scoring", "perplexity", "training", "linear_map", "healing"])
def test_token_ids_outside_the_vocabulary_are_refused_wherever_sequences_enter(use, bad_id):
    sequences = random_tokens(8, 8)
    sequences[3, 5] = bad_id
    with pytest.raises(ValueError, match=rf"token id {bad_id} is outside the model's vocabulary of {VOCAB} ids"):
        use(tiny_llama(), sequences)
