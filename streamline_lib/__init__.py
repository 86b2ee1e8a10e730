"""streamline_lib: layer pruning of language models (LLM-Streamline and its peers), as the streamline-book teaches it.

The names people use most are importable from here; they load on first use, so
``import streamline_lib`` stays fast::

    from streamline_lib import Recipe, compress, load_model, save_pruned

    model, tokenizer = load_model("smollm2-135m")
    result = compress(model, tokenizer, Recipe(sparsity=0.25, replacement="ffn"))
    save_pruned(result, tokenizer, "pruned")

The packages by role: :mod:`~streamline_lib.models` (loading; the registry of bundled models is
:mod:`~streamline_lib.registry`), :mod:`~streamline_lib.data` (bundled corpora and tasks),
:mod:`~streamline_lib.architecture` (decoder layers and hidden states),
:mod:`~streamline_lib.methods` (scoring, pruning, replacements, training, healing, sharing),
:mod:`~streamline_lib.evaluation`, :mod:`~streamline_lib.export`, :mod:`~streamline_lib.pipeline`
(recipe, compress, reproduce), :mod:`~streamline_lib.core` (files and caches) and
:mod:`~streamline_lib.book` (the claims ledger).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "Recipe": "pipeline.recipe", "DataSpec": "pipeline.recipe", "compress": "pipeline.compress",
    "CompressResult": "pipeline.compress", "reproduce": "pipeline.reproduce",
    "load_model": "models.loading", "MODELS": "registry", "DEFAULT_MODEL": "registry",
    "token_sequences": "data.text_data", "token_sequences_from_text": "data.text_data",
    "score_blocks": "methods.scoring", "prune": "methods.pruning", "prune_layers": "methods.pruning",
    "TrainConfig": "methods.training", "LoraSettings": "methods.healing", "heal_with_lora": "methods.healing",
    "sharp": "methods.sharing", "layers_for_sparsity": "methods.sparsity",
    "perplexity": "evaluation.held_out", "evaluate_zero_shot": "evaluation.zero_shot",
    "HEADROOM_SET": "data.zero_shot_tasks",
    "compare": "evaluation.statistics",
    "save_pruned": "export.checkpoint", "load_pruned": "export.checkpoint", "export_gguf": "export.gguf",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'streamline_lib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
