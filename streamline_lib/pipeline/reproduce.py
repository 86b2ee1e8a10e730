"""Run an export's recorded recipe again and say whether the new weights equal the saved ones.

An export written from a :func:`~streamline_lib.pipeline.compress.compress` result records its
recipe verbatim, the source model and its dtype, and the software versions. :func:`reproduce`
loads that source model again, runs the recipe, saves the result into a temporary folder and
compares every weight tensor with the export's. On the same kind of machine with the same
versions they are equal bit for bit; elsewhere the report gives the largest difference.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..export.checkpoint import read_metadata, save_pruned, software_versions
from ..models.loading import load_model
from .compress import compress
from .recipe import Recipe

__all__ = ["Reproduction", "weight_differences", "reproduce"]


@dataclass(frozen=True)
class Reproduction:
    """How a re-run of an export's recipe compares with the export."""

    equal: bool  # every tensor equal bit for bit, and the same tensors
    tensors: int  # tensors compared
    max_abs_difference: float  # the largest |saved - new| over all tensors (0.0 when equal)
    largest_in: str | None  # the tensor holding it (None when equal)
    only_in_one: tuple[str, ...]  # tensor names that one of the two has and the other lacks
    versions_then: dict[str, str]
    versions_now: dict[str, str]


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            tensors.update({name: weights.get_tensor(name) for name in weights.keys()})
    return tensors


def weight_differences(saved: Path, new: Path) -> tuple[int, float, str | None, tuple[str, ...]]:
    """Tensors compared, the largest absolute difference, its tensor, and names only one folder has."""
    a, b = _tensors(saved), _tensors(new)
    common = sorted(a.keys() & b.keys())
    largest, where = 0.0, None
    for name in common:
        if torch.equal(a[name], b[name]):
            continue
        difference = float((a[name].double() - b[name].double()).abs().max()) if a[name].shape == b[name].shape \
            else float("inf")
        if where is None or difference > largest:
            largest, where = difference, name
    return len(common), largest, where, tuple(sorted(a.keys() ^ b.keys()))


def reproduce(path: str | os.PathLike, *, device: str = "cpu", cache: bool | str | os.PathLike = False,
              progress: bool = True) -> Reproduction:
    """Re-run the recipe recorded in the export at ``path`` and compare the weights (see the module docstring).

    ``cache`` (False, True or a folder, as in :mod:`streamline_lib.core.results_cache`) is
    passed to :func:`~streamline_lib.pipeline.compress.compress`.
    """
    path = Path(path)
    metadata = read_metadata(path)
    if metadata is None:
        raise FileNotFoundError(f"{path} has no streamline.json: it is not an export of streamline_lib")
    if "recipe" not in metadata:
        raise ValueError(f"{path} records no recipe (it was saved from the step-by-step functions or by an older "
                         "version), so it cannot be reproduced: export it from compress() or 'streamline prune'")
    recipe = Recipe.from_dict(metadata["recipe"])
    model, tokenizer = load_model(metadata["source_model"], dtype=metadata["source_dtype"], device=device)
    result = compress(model, tokenizer, recipe, source_model=metadata["source_model"], cache=cache,
                      progress=progress)
    with tempfile.TemporaryDirectory(prefix="streamline-reproduce-") as scratch:
        again = save_pruned(result, tokenizer, Path(scratch) / "again")
        tensors, largest, where, only_in_one = weight_differences(path, again)
    return Reproduction(where is None and not only_in_one, tensors, largest, where, only_in_one,
                        metadata.get("versions", {}), software_versions())
