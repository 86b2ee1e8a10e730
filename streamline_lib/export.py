"""Save a pruned model as a checkpoint that other tools can load, and load it back.

Three cases, by replacement:

* ``none``, ``layer`` and ``linear`` (whose map is folded into a kept layer): the pruned
  model is an ordinary model of its architecture
  with fewer layers, so it is saved with ``save_pretrained`` and loads with plain
  ``AutoModelForCausalLM.from_pretrained(path)``: vLLM, llama.cpp converters, lm-eval
  and any other transformers-based tool can use it.
* ``ffn`` in llama-style architectures (llama, mistral, qwen2): the replacement
  ``h + mlp(norm(h))`` is exactly a decoder layer whose attention output projection is
  zero (the layer computes ``h + 0``, then ``+ mlp(post_attention_layernorm(h))``). It is
  saved as such a layer, so it too loads with plain transformers and gives the same
  logits. The price: the checkpoint stores the idle attention's weights (zeros) and a
  forward pass computes it; the in-memory FFN of :mod:`streamline_lib.replacement` is
  the fast form, and :func:`load_pruned` restores it.
* every other FFN (``ffn_relu``, ``ffn`` elsewhere): no transformers class holds it, so
  the weights go to ``streamline_model.safetensors`` (not ``model.safetensors``) next to
  the architecture's ``config.json``. Plain transformers then refuses the folder (no
  model file) instead of silently loading a random layer; :func:`load_pruned` (and
  :func:`streamline_lib.models.load_model`) rebuilds the model with our
  :class:`~streamline_lib.replacement.ResidualFFN`.

Beside ``config.json``, ``streamline.json`` records the source model, the removed layers
(``removed_layers``, 0-based; ``start``: the first of them when they are one block, else
null; ``n``: how many), the metric or selection method,
the replacement, its training settings and results, and the storage format.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from .layers import decoder_layer_class, get_layers, replace_block
from .pruning import LayerSetPruneResult, PruneResult
from .replacement import NO_MODULE, ResidualFFN, is_llama_style, make_ffn_like

__all__ = ["METADATA_FILE", "CUSTOM_WEIGHTS_FILE", "check_output_folder", "save_pruned", "read_metadata", "load_pruned"]

METADATA_FILE = "streamline.json"
CUSTOM_WEIGHTS_FILE = "streamline_model.safetensors"
FORMAT_VERSION = 1


def _ffn_as_decoder_layer(model: PreTrainedModel, index: int, ffn: ResidualFFN) -> torch.nn.Module:
    """A decoder layer computing exactly ``ffn``: zero attention output, the FFN as its MLP."""
    layer = decoder_layer_class(model)(model.config, layer_idx=index).to(device=model.device, dtype=model.dtype)
    with torch.no_grad():
        for projection in ("q_proj", "k_proj", "v_proj", "o_proj"):
            for tensor in getattr(layer.self_attn, projection).parameters():
                tensor.zero_()
        layer.post_attention_layernorm.load_state_dict(ffn.norm.state_dict())
        layer.mlp.load_state_dict(ffn.mlp.state_dict())
    return layer


def _storage_format(result: PruneResult | LayerSetPruneResult) -> str:
    if result.replacement in NO_MODULE:  # nothing stands where the block was (it may have been the last)
        return "transformers"
    module = get_layers(result.model)[result.start]
    if not isinstance(module, ResidualFFN):
        return "transformers"
    original = get_layers(result.model)[0]  # an FFN never sits at position 0
    if result.replacement == "ffn" and is_llama_style(original, result.model.config):
        return "transformers-zero-attention"
    return "streamline-ffn"


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def check_output_folder(path: str | os.PathLike, overwrite: bool, fix: str = "pass overwrite=True") -> None:
    """Refuse a ``path`` that is a file or a non-empty folder unless ``overwrite``; ``fix`` ends the message.

    :func:`save_pruned` checks this itself; the CLI calls it too, before the slow work.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; choose another folder or {fix}")


def save_pruned(
    result: PruneResult | LayerSetPruneResult,
    tokenizer: PreTrainedTokenizerBase,
    path: str | os.PathLike,
    source_model: str,
    metric: str | None = None,
    train_config: Any = None,
    overwrite: bool = False,
    healing: Any = None,
) -> Path:
    """Write ``result.model`` and ``tokenizer`` to ``path`` with a ``streamline.json``.

    ``healing`` is the :class:`~streamline_lib.healing.HealResult` when the model was
    healed with LoRA after pruning (its updates are merged, so the model is saved as is).
    Refuses to write into an existing non-empty folder unless ``overwrite``. The files
    are written to a temporary folder first, so a failed save leaves ``path`` as it was.
    """
    path = Path(path)
    check_output_folder(path, overwrite)
    storage = _storage_format(result)
    model = result.model
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}-") as tmp:
        out = Path(tmp) / "checkpoint"
        if storage == "transformers-zero-attention":
            model = copy.deepcopy(model)
            layer = _ffn_as_decoder_layer(model, result.start, get_layers(model)[result.start])
            replace_block(model, result.start, 1, layer)
        if storage == "streamline-ffn":
            model.config.save_pretrained(out)
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            tied = [k for k in state if k.endswith("lm_head.weight")] if model.config.tie_word_embeddings else []
            save_file({k: v for k, v in state.items() if k not in tied}, out / CUSTOM_WEIGHTS_FILE)
        else:
            model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        train = result.train_result
        metadata = {
            "format_version": FORMAT_VERSION,
            "source_model": source_model,
            "start": result.start,
            "n": result.n,
            "removed_layers": list(result.removed_layers),
            "metric": metric,
            "replacement": result.replacement,
            "storage": storage,
            "num_hidden_layers": model.config.num_hidden_layers,
            "training": None if train is None else {
                "config": _jsonable(train_config),
                "loss": train.loss,
                "steps": train.steps,
                "best_val_loss": train.best_val_loss,
                "baseline_val_loss": train.baseline_val_loss,
                "stopped_early": train.stopped_early,
                "wall_time_s": train.wall_time,
            },
            "linear_fit": None if result.linear_fit is None else _jsonable(result.linear_fit),
            "healing": None if healing is None else {
                "method": "lora", "lora_parameters": healing.lora_parameters,
                "best_val_loss": healing.train_result.best_val_loss,
                "baseline_val_loss": healing.train_result.baseline_val_loss,
                "steps": healing.train_result.steps, "wall_time_s": healing.train_result.wall_time,
            },
        }
        (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(out, path)
    return path


def read_metadata(path: str | os.PathLike) -> dict | None:
    """The ``streamline.json`` of a saved pruned model, or ``None`` for any other folder."""
    file = Path(path) / METADATA_FILE
    return json.loads(file.read_text()) if file.exists() else None


def load_pruned(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Load a model saved by :func:`save_pruned`, with its FFN in the fast in-memory form."""
    path = Path(path)
    metadata = read_metadata(path)
    if metadata is None:
        raise FileNotFoundError(f"{path} has no {METADATA_FILE}: it was not saved by save_pruned")
    start = metadata["start"]
    if metadata["storage"] == "streamline-ffn":
        config = AutoConfig.from_pretrained(path)
        with init_empty_weights():  # parameters on meta, buffers (rotary inv_freq) real
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        replace_block(model, start, 1, make_ffn_like(model, metadata["replacement"]))
        model.load_state_dict(load_file(path / CUSTOM_WEIGHTS_FILE), strict=False, assign=True)
        model.tie_weights()
        missing = [name for name, p in model.named_parameters() if p.is_meta]
        if missing:
            raise ValueError(f"{path / CUSTOM_WEIGHTS_FILE} lacks weights for {', '.join(missing[:5])}")
        return model.to(dtype).eval()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    if metadata["storage"] == "transformers-zero-attention":
        layer = get_layers(model)[start]
        ffn = make_ffn_like(model, "ffn")
        ffn.norm.load_state_dict(layer.post_attention_layernorm.state_dict())
        ffn.mlp.load_state_dict(layer.mlp.state_dict())
        replace_block(model, start, 1, ffn.to(dtype))
    return model
