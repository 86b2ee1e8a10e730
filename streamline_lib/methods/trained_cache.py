"""Trained weights on disk, so a notebook re-run or a later chapter does not train again.

A trained module (a replacement, LoRA matrices) is stored as ``<hash>.safetensors``
beside its training record ``<hash>.json`` (:mod:`streamline_lib.core.results_cache`),
both named by a hash of a key holding everything that decides the weights: the
starting model's fingerprint, the training tokens, every training setting, the torch
version and whatever the caller adds. Both are written atomically and the record last,
so a record implies its weights; it holds their size and sha256
(:func:`.files.file_digest`), and weights that do not match it (truncated, damaged,
replaced) are ignored with a warning and trained again.

Every function that trains goes through :func:`cached_training` ("train, or load what was
trained, and store it"), with ``cache`` as :mod:`streamline_lib.core.results_cache` describes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from ..core.cache_entry import digest_problem
from ..core.files import atomic_write_bytes, file_digest
from ..core.results_cache import fingerprint, load_result, model_fingerprint, results_dir, store_result
from ..data.assets import cache_dir
from .training import TrainConfig, TrainResult

__all__ = ["cache_folder", "training_key", "load_trained", "store_trained", "cached_training"]


def cache_folder(cache: bool | str | os.PathLike) -> Path:
    """The folder ``cache=True`` (``cache_dir()/pruned``) or ``cache=<folder>`` means, created if missing."""
    return results_dir(cache_dir() / "pruned" if cache is True else Path(cache))


def training_key(kind: str, model: nn.Module, sequences: torch.Tensor, config: TrainConfig,
                 **extra: Any) -> dict[str, Any]:
    """Everything that decides weights trained from ``model`` on ``sequences`` (progress bars do not)."""
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "progress"}
    tokens = hashlib.blake2b(sequences.to(torch.int64).contiguous().numpy().tobytes(), digest_size=32)
    return {"kind": kind, "model": model_fingerprint(model), **extra, "train_tokens": tokens.hexdigest(),
            "shape": list(sequences.shape), "config": settings, "torch": torch.__version__}


def _weights_path(folder: Path, key: dict[str, Any]) -> Path:
    return folder / f"{fingerprint(key)}.safetensors"


def _record_from_json(data: dict[str, Any]) -> tuple[TrainResult, dict[str, Any]]:
    """The training record and the digest of its weights file."""
    return TrainResult.from_json(data["training"]), data["weights"]


def load_trained(folder: Path, key: dict[str, Any],
                 apply_weights: Callable[[dict[str, torch.Tensor]], Any]) -> TrainResult | None:
    """Hand the cached weights to ``apply_weights`` and return the cached record, or None on a miss.

    Weights that do not match the size and sha256 in their record are a miss, with a warning.
    """
    stored = load_result(folder, key, _record_from_json)
    if stored is None:
        return None
    record, digest = stored
    weights = _weights_path(folder, key)
    problem = digest_problem(weights, digest)
    if problem is not None:
        warnings.warn(f"ignoring the cached trained weights {weights}: {problem}; training them again",
                      RuntimeWarning, stacklevel=2)
        return None
    apply_weights(load_file(weights))
    return record


def store_trained(folder: Path, key: dict[str, Any], weights: dict[str, torch.Tensor], trained: TrainResult) -> None:
    """Keep ``weights`` and their training record (with the weights' size and sha256) under ``key``."""
    path = atomic_write_bytes(_weights_path(folder, key), save({k: v.contiguous() for k, v in weights.items()}))
    # written last: a record implies its weights
    store_result(folder, key, {"training": dataclasses.asdict(trained), "weights": file_digest(path)})


def cached_training(
    cache: bool | str | os.PathLike,
    *,
    key: Callable[[], dict[str, Any]],
    train: Callable[[], TrainResult],
    load: Callable[[dict[str, torch.Tensor]], Any],
    weights: Callable[[], dict[str, torch.Tensor]],
) -> TrainResult:
    """``train()``, or what it trained before: the one way a trained module goes through the cache.

    ``cache=False`` just trains; nothing is read or written and ``key`` is not computed.
    Otherwise (True or a folder, see :func:`cache_folder`) the weights stored under
    ``key()`` are handed to ``load`` and their record returned; on a miss ``train()``
    runs and ``weights()`` are stored with its record.
    """
    if cache is False:
        return train()
    folder = cache_folder(cache)
    entry = key()
    trained = load_trained(folder, entry, load)
    if trained is None:
        trained = train()
        store_trained(folder, entry, weights(), trained)
    return trained
