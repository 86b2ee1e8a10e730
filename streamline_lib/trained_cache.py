"""Trained weights on disk, so a notebook re-run or a later chapter does not train again.

A trained module (a replacement, LoRA matrices) is stored as ``<hash>.safetensors``
beside its training record ``<hash>.json`` (:mod:`streamline_lib.results_cache`),
both named by a hash of a key holding everything that decides the weights: the
starting model's fingerprint, the training tokens, every training setting, the torch
version and whatever the caller adds. The record is written last, so a record implies
its weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .assets import cache_dir
from .results_cache import fingerprint, load_result, model_fingerprint, results_dir, store_result
from .training import TrainConfig, TrainResult

__all__ = ["cache_folder", "training_key", "load_trained", "store_trained"]


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


def load_trained(folder: Path, key: dict[str, Any],
                 apply_weights: Callable[[dict[str, torch.Tensor]], Any]) -> TrainResult | None:
    """Hand the cached weights to ``apply_weights`` and return the cached record, or None on a miss."""
    weights = folder / f"{fingerprint(key)}.safetensors"
    record = load_result(folder, key, TrainResult.from_json)
    if record is None or not weights.exists():
        return None
    apply_weights(load_file(weights))
    return record


def store_trained(folder: Path, key: dict[str, Any], weights: dict[str, torch.Tensor], trained: TrainResult) -> None:
    """Keep ``weights`` and their training record under ``key``."""
    save_file({k: v.contiguous() for k, v in weights.items()}, folder / f"{fingerprint(key)}.safetensors")
    store_result(folder, key, dataclasses.asdict(trained))  # written last: a record implies its weights
