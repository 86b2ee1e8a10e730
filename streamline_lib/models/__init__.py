"""Load a causal language model and its tokenizer: a bundled model by name, a folder, or a Hugging Face id.

The registry of bundled models is :mod:`streamline_lib.registry`; loading, converting and
checking are in :mod:`streamline_lib.models.loading`. Both are re-exported here.
"""

from ..registry import DEFAULT_MODEL, MODELS, BundledModel, run_note
from .loading import bundled_model_dir, check_device, check_model_folder, check_model_source, load_model, resolve_dtype

__all__ = ["BundledModel", "MODELS", "DEFAULT_MODEL", "run_note", "bundled_model_dir", "resolve_dtype",
           "check_device", "check_model_source", "check_model_folder", "load_model"]
