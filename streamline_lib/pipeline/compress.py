"""One call for the whole pipeline: choose what to remove, remove it, replace or heal, and say what was done.

``compress(model, tokenizer, recipe)`` runs every method the book has from one
:class:`~streamline_lib.pipeline.recipe.Recipe`: it cuts the calibration and training windows
the recipe names, scores blocks or layers, removes them, trains or fits what stands in for
them, heals, and returns a :class:`CompressResult` that carries the recipe and the source
model, so that :func:`streamline_lib.export.checkpoint.save_pruned` needs nothing else and
``streamline reproduce`` can run the same recipe again. The step-by-step functions it calls
stay public, for teaching and for what a recipe does not cover.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..architecture.layers import num_layers
from ..data.text_data import token_sequences
from ..methods.healing import HealResult, heal_with_lora
from ..methods.linear_replacement import LinearFit
from ..methods.pruning import prune, prune_layers
from ..methods.replacement import layers_to_replace
from ..methods.scoring import collect_stats, score_blocks, shortgpt_layers, sleb_layers
from ..methods.sharing import SharpResult, layers_to_share, merged_copy, sharing_pattern, sharp
from ..methods.training import TrainResult
from ..models.loading import source_name
from .recipe import DataSpec, Recipe

__all__ = ["CompressResult", "compress"]


@dataclass(frozen=True)
class CompressResult:
    """A compressed model, what was removed and trained, and the recipe and source that made it."""

    model: PreTrainedModel  # a new model; the one passed in is unchanged
    recipe: Recipe
    source_model: str  # the bundled name, folder or hub id the dense model was loaded from
    source_dtype: str  # the dense model's dtype ("float32", "bfloat16"): reproducing loads it so
    removed_layers: tuple[int, ...]  # original 0-based indices; empty for sharp (it removes no layer)
    start: int | None  # the first removed layer when they are one block, else None
    train_result: TrainResult | None = None  # the replacement's training
    linear_fit: LinearFit | None = None  # ReplaceMe's map
    healing: HealResult | None = None  # LoRA healing, merged into model
    sharp: SharpResult | None = None  # SHARP's sharing and recovery, merged into model

    @property
    def n(self) -> int:
        return len(self.removed_layers)

    @property
    def replacement(self) -> str:
        return self.recipe.replacement

    @property
    def metric(self) -> str:
        """How the layers were chosen: the block metric, or the method's name for the others."""
        return self.recipe.metric if self.recipe.method in ("block", "replaceme") else self.recipe.method


def _windows(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, spec: DataSpec, seed: int) -> torch.Tensor:
    return token_sequences(tokenizer, spec.corpus, spec.split, num_seqs=spec.num_seqs, seq_len=spec.seq_len,
                           seed=seed, max_length=getattr(model.config, "max_position_embeddings", None))


def _count(model: PreTrainedModel, recipe: Recipe) -> int:
    if recipe.layers is not None:
        return recipe.layers
    if recipe.method == "sharp":
        return layers_to_share(model, recipe.sparsity, recipe.lora.rank, recipe.sparsity_of)
    return layers_to_replace(model, recipe.sparsity, recipe.replacement, recipe.sparsity_of)


def compress(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, recipe: Recipe, *,
             source_model: str | None = None, cache: bool | str | os.PathLike = False,
             progress: bool = True) -> CompressResult:
    """Run ``recipe`` on ``model`` (see the module docstring); ``model`` is not changed.

    ``source_model`` is what ``model`` was loaded from, recorded so that the export can be
    reproduced (default: the bundled name or folder :func:`~streamline_lib.models.loading.load_model`
    loaded it from). ``cache`` (False, True or a folder, as in
    :mod:`streamline_lib.core.results_cache`) keeps trained weights as
    :func:`~streamline_lib.methods.pruning.prune` does. The same recipe on the same machine gives
    the same weights, bit for bit.
    """
    source = source_model or source_name(model)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    training = dataclasses.replace(recipe.training, progress=progress)
    healing_config = dataclasses.replace(recipe.healing, progress=progress)
    n = _count(model, recipe)
    calibration = _windows(tokenizer, model, recipe.calibration, recipe.seed)
    needs_training = recipe.replacement != "none" or recipe.heal == "lora" or recipe.method == "sharp"
    train = _windows(tokenizer, model, recipe.train_data, recipe.seed) if needs_training else None
    made = dict(recipe=recipe, source_model=source, source_dtype=dtype)
    if recipe.method == "sharp":
        layers = sharing_pattern(num_layers(model), n)
        warmup = train[:recipe.warmup_seqs] if recipe.warmup_seqs is not None else train
        shared = sharp(model, layers, rank=recipe.lora.rank, alpha=recipe.lora.alpha, slw_sequences=warmup,
                       slw_config=training, sft_sequences=train, sft_config=healing_config, seed=recipe.seed,
                       cache=cache)
        return CompressResult(merged_copy(shared), **made, removed_layers=(), start=None, sharp=shared)
    if recipe.method in ("shortgpt", "sleb"):
        chosen = (shortgpt_layers(collect_stats(model, calibration, progress=progress), n)
                  if recipe.method == "shortgpt" else sleb_layers(model, calibration, n, progress=progress,
                                                                   cache=cache).first(n))
        pruned = prune_layers(model, chosen)
        result = CompressResult(pruned.model, **made, removed_layers=pruned.removed_layers, start=pruned.start)
    else:
        start = score_blocks(model, calibration, n=n, metric=recipe.metric, progress=progress).best_start
        pruned = prune(model, start, n, replacement=recipe.replacement, train_sequences=train,
                       train_config=training, cache=cache, linear_loss=recipe.linear_loss)
        result = CompressResult(pruned.model, **made, removed_layers=pruned.removed_layers, start=start,
                                train_result=pruned.train_result, linear_fit=pruned.linear_fit)
    if recipe.heal == "lora":
        healed = heal_with_lora(result.model, train, config=healing_config, lora=recipe.lora, cache=cache)
        result = dataclasses.replace(result, model=healed.model, healing=healed)
    return result
