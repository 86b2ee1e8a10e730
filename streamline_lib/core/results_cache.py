"""Evaluation results on disk, keyed so that a changed model or prompt never reuses a stale entry.

A result is stored as a human-readable JSON file
``{"key": ..., "result": ..., "result_sha256": ...}`` named by a hash of its key. The
key is a JSON-able mapping chosen by the caller (for zero-shot scores: the model's
fingerprint, task, limit, seed, hashes of the prompts and of their tokens, and the
scoring code's version), so anything that can change a number must be in it.
``result_sha256`` is the sha256 of the result's canonical JSON text, so a result that was
edited or damaged after it was written is never used. Writes are atomic
(:func:`.files.atomic_write_text`); a file that cannot be read, does not parse, holds
another key, does not match its sha256 or does not decode is ignored with a warning and
the result recomputed and rewritten.

:func:`model_fingerprint` hashes everything that decides a model's outputs: every
parameter and buffer (name, shape, dtype and bytes), the module structure
(``repr``) and the config. blake2b runs at about 1 GB/s, so a 135M-parameter model
in float32 takes about half a second; compute it once per evaluation.

**The** ``cache`` **argument.** Every function of the library that can keep what it
computed on disk (results here, trained weights in :mod:`streamline_lib.methods.trained_cache`)
takes ``cache``, and its default is False everywhere, so nothing is written unless asked:

* ``False``: compute afresh; nothing is read or written.
* ``True``: reuse an entry whose key matches and keep new ones, in the library's folder
  under :func:`~streamline_lib.data.assets.cache_dir`: ``results/`` for results
  (:func:`cache_location`), ``pruned/`` for trained weights
  (:func:`~streamline_lib.methods.trained_cache.cache_folder`).
* a folder (``str`` or path): the same, in that folder instead.

The key holds everything that decides the entry, so a changed model, input or setting
never reuses a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from ..data.assets import cache_dir
from .files import atomic_write_text, remove_stale_temporaries

__all__ = ["fingerprint", "model_fingerprint", "results_dir", "cache_location", "result_path", "load_result",
           "store_result"]

T = TypeVar("T")

# Config entries that say where a model was loaded from, not what it computes.
_LOCATION_KEYS = ("_name_or_path", "_model_name_or_path")


def _canonical_json(value: Any) -> bytes:
    """``value`` as JSON with sorted keys and no spaces (tuples as lists): equal values, equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(value: Any) -> str:
    """blake2b hex digest of ``value`` as canonical JSON (sorted keys, tuples as lists)."""
    return hashlib.blake2b(_canonical_json(value), digest_size=32).hexdigest()


def _result_sha256(result: Any) -> str:
    """sha256 of a result as read back from JSON: stored with it, so an edited or damaged result is not used."""
    return hashlib.sha256(_canonical_json(result)).hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())  # raw bytes of any dtype, bfloat16 included


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the model's weights, buffers, structure and config: equal only for the same model."""
    digest = hashlib.blake2b(digest_size=32)
    config = getattr(model, "config", None)
    if config is not None:
        settings = {k: v for k, v in config.to_dict().items() if k not in _LOCATION_KEYS}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(repr(model).encode())
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            digest.update(f"\n{kind} {name} {tuple(tensor.shape)} {tensor.dtype}\n".encode())
            digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def results_dir(folder: str | os.PathLike | None = None) -> Path:
    """The folder for cached results (default: ``cache_dir()/results``), created if missing."""
    path = Path(folder) if folder is not None else cache_dir() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_location(cache: bool | str | os.PathLike) -> Path | None:
    """The results folder a ``cache`` argument means (see the module docstring), created if missing; None for False."""
    if cache is False:
        return None
    return results_dir(None if cache is True else cache)


def result_path(folder: Path, key: Mapping[str, Any]) -> Path:
    """Where the result for ``key`` lives in ``folder``."""
    return folder / f"{fingerprint(key)}.json"


def load_result(folder: Path, key: Mapping[str, Any], decode: Callable[[Any], T]) -> T | None:
    """The stored result for ``key``, decoded, or None when there is none (or it is unusable)."""
    path = result_path(folder, key)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["key"] != json.loads(json.dumps(key)):  # compare as JSON: tuples are lists there
            raise ValueError("the file holds a different key")
        if data.get("result_sha256") != _result_sha256(data["result"]):
            raise ValueError("its result does not match the sha256 stored with it "
                             "(edited, damaged, or written before results carried one)")
        return decode(data["result"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        warnings.warn(f"ignoring the unusable cached result {path} ({type(error).__name__}: {error}); "
                      "recomputing it", RuntimeWarning, stacklevel=2)
        return None


def store_result(folder: Path, key: Mapping[str, Any], result: Any) -> Path:
    """Write ``result`` (JSON-able) for ``key`` atomically, with its sha256; returns the file's path."""
    remove_stale_temporaries(folder)
    as_read_back = json.loads(json.dumps(result))  # the sha256 is of what load_result will see (int keys as text)
    text = json.dumps({"key": key, "result": result, "result_sha256": _result_sha256(as_read_back)},
                      indent=1, ensure_ascii=False)
    return atomic_write_text(result_path(folder, key), text)
