"""Save a pruned model as a checkpoint that other tools can load, and load it back.

Three cases, by replacement:

* ``none``, ``layer`` and ``linear`` (whose map is folded into a kept layer): the pruned
  model is an ordinary model of its architecture
  with fewer layers, so it is saved with ``save_pretrained`` and loads with plain
  ``AutoModelForCausalLM.from_pretrained(path)``: vLLM, llama.cpp converters, lm-eval
  and any other transformers-based tool can use it.
* an FFN that is exactly a decoder layer of the model's own class whose attention adds
  zero (:func:`zero_attention_form`): ``ffn`` in llama, mistral, qwen2 (the layer
  computes ``h + 0``, then ``+ mlp(post_attention_layernorm(h))``) and phi3 (the same with
  the gate and up projections fused), and ``ffn_relu`` in pre-norm OPT whose MLP is
  ``4 x hidden`` wide with ReLU (OPT's own MLP). It is saved as such a layer, so it too
  loads with plain transformers and gives the same logits. The price: the checkpoint
  stores the idle attention's weights (zeros) and a forward pass computes it; the
  in-memory FFN of :mod:`streamline_lib.methods.replacement` is the fast form, and
  :func:`load_pruned` restores it.
* every other FFN (``ffn_relu`` outside OPT, ``ffn`` in Gemma 3, GPT-2, GPT-NeoX and OPT):
  no decoder layer of the architecture computes it (another activation, a normalised MLP
  output, no gate), so the weights go to ``streamline_model.safetensors`` (not
  ``model.safetensors``) next to the architecture's ``config.json``. Plain transformers
  then refuses the folder (no model file) instead of silently loading a random layer;
  :func:`load_pruned` (and :func:`streamline_lib.models.loading.load_model`) rebuilds the model
  with our :class:`~streamline_lib.methods.replacement.ResidualFFN`.

Beside ``config.json``, ``streamline.json`` records the source model, the removed layers
(``removed_layers``, 0-based; ``start``: the first of them when they are one block, else
null; ``n``: how many), the metric or selection method,
the replacement, its training settings and results, the storage format and what loads
it (``loads_with``), and evaluation results once :func:`record_evaluation` adds them.
A model card, ``README.md``, says the same for people and for the Hugging Face hub
(:mod:`streamline_lib.export.model_card`).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from ..architecture.layers import decoder_layer_class, get_layers, replace_block
from ..core.cache_entry import digest_problem
from ..core.files import atomic_write_text, file_digest, refuse_symlink
from ..methods.pruning import LayerSetPruneResult, PruneResult
from ..methods.replacement import NO_MODULE, REPLACEMENTS, PlainFFN, ResidualFFN, is_llama_style, make_ffn_like
from ..methods.training import check_finite_weights
from .model_card import CARD_FILE, write_model_card
from .output_folder import claim_output

__all__ = ["METADATA_FILE", "CUSTOM_WEIGHTS_FILE", "STORAGE_FORMATS", "ZeroAttentionForm", "zero_attention_form",
           "gguf_file_name", "export_files", "claim_export_folder", "software_versions", "save_pruned", "read_metadata", "verify_export",
           "record_evaluation", "load_pruned"]

#: The file of an export that records how the model was pruned and evaluated.
METADATA_FILE = "streamline.json"
#: The weights of an export that plain transformers cannot load (storage ``streamline-ffn``).
CUSTOM_WEIGHTS_FILE = "streamline_model.safetensors"
FORMAT_VERSION = 2  # 2: a manifest of the files (size, sha256) under "files"


@dataclass(frozen=True)
class ZeroAttentionForm:
    """How an FFN replacement is written as a decoder layer of the model's class whose attention adds 0."""

    attention_output: str  # the attention's output projection in the layer; zeroed (weight and bias)
    keys: dict[str, str]  # ResidualFFN state-dict key -> the decoder layer's
    fused: dict[str, tuple[str, str]] = field(default_factory=dict)  # layer key <- two FFN keys, concatenated

    def to_layer(self, ffn_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The decoder layer's MLP and norm tensors holding ``ffn_state``."""
        state = {self.keys[key]: value for key, value in ffn_state.items() if key in self.keys}
        state.update({key: torch.cat([ffn_state[a], ffn_state[b]]) for key, (a, b) in self.fused.items()})
        return state

    def to_ffn(self, layer_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inverse of :meth:`to_layer`: the FFN's tensors from the decoder layer's."""
        state = {ffn_key: layer_state[key] for ffn_key, key in self.keys.items()}
        for key, (a, b) in self.fused.items():
            state[a], state[b] = layer_state[key].chunk(2)
        return state


_SWIGLU = ("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")
_LLAMA_FFN = ZeroAttentionForm("self_attn.o_proj", {"norm.weight": "post_attention_layernorm.weight",
                                                    **{key: key for key in _SWIGLU}})
_PHI3_FFN = ZeroAttentionForm(  # Phi-3's MLP: gate_up_proj, chunked into gate then up
    "self_attn.o_proj", {"norm.weight": "post_attention_layernorm.weight", _SWIGLU[2]: _SWIGLU[2]},
    fused={"mlp.gate_up_proj.weight": _SWIGLU[:2]})
_OPT_FFN_RELU = ZeroAttentionForm("self_attn.out_proj", {
    "norm.weight": "final_layer_norm.weight", "norm.bias": "final_layer_norm.bias",
    "mlp.0.weight": "fc1.weight", "mlp.0.bias": "fc1.bias", "mlp.2.weight": "fc2.weight", "mlp.2.bias": "fc2.bias"})


def zero_attention_form(model: PreTrainedModel, kind: str) -> ZeroAttentionForm | None:
    """The decoder-layer form of a ``kind`` FFN replacement in ``model``'s architecture, or None if none is exact."""
    config = model.config
    if kind == "ffn" and is_llama_style(get_layers(model)[0], config):
        return _LLAMA_FFN
    if kind == "ffn" and config.model_type == "phi3" and config.hidden_act == "silu":
        return _PHI3_FFN
    opt_mlp_is_ffn_relu = (config.model_type == "opt" and config.do_layer_norm_before and config.enable_bias
                           and config.activation_function == "relu" and config.layer_norm_elementwise_affine
                           and config.ffn_dim == 4 * config.hidden_size)
    if kind == "ffn_relu" and opt_mlp_is_ffn_relu:
        return _OPT_FFN_RELU
    return None


def _ffn_as_decoder_layer(model: PreTrainedModel, index: int, ffn: ResidualFFN,
                          form: ZeroAttentionForm) -> torch.nn.Module:
    """A decoder layer computing exactly ``ffn``: zero attention output, the FFN as its MLP."""
    layer = decoder_layer_class(model)(model.config, layer_idx=index).to(device=model.device, dtype=model.dtype)
    attention = form.attention_output.rpartition(".")[0]
    with torch.no_grad():  # all of the attention, not only its output: randomly initialised q/k/v are not
        for tensor in layer.get_submodule(attention).parameters():  # reproducible, and they compute nothing
            tensor.zero_()
    unexpected = layer.load_state_dict(form.to_layer(ffn.state_dict()), strict=False).unexpected_keys
    if unexpected:  # a form that names tensors the layer does not have: a bug, never a silent random MLP
        raise ValueError(f"{type(layer).__name__} has no {', '.join(unexpected)}")
    return layer


def _storage_format(result: PruneResult | LayerSetPruneResult) -> str:
    if result.replacement in NO_MODULE:  # nothing stands where the block was (it may have been the last)
        return "transformers"
    module = get_layers(result.model)[result.start]
    if not isinstance(module, (ResidualFFN, PlainFFN)):
        return "transformers"
    if zero_attention_form(result.model, result.replacement) is not None:
        return "transformers-zero-attention"
    return "streamline-ffn"


def _loads_with(storage: str, model_type: str, replacement: str) -> str:
    """What loads a checkpoint of ``storage``, in one sentence for streamline.json and the model card."""
    if storage != "streamline-ffn":
        return "transformers: AutoModelForCausalLM.from_pretrained(path), or any tool that reads the architecture"
    return (f"streamline_lib: streamline_lib.models.load_model(path) or streamline_lib.export.load_pruned(path); "
            f"no {model_type} decoder layer computes the {replacement!r} replacement, so plain transformers "
            "refuses the folder (it has no model.safetensors)")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def gguf_file_name(dtype: str) -> str:
    """The name ``streamline gguf`` gives a GGUF file of ``dtype`` inside an export (part of the export)."""
    return f"model-{dtype}.gguf"


def export_files(folder: str | os.PathLike) -> set[str] | None:
    """The names of the files that make up the export in ``folder``; None when it holds no export of ours.

    These are the files its manifest lists, ``streamline.json``, the card and the GGUF files
    ``streamline gguf`` writes there: anything else in the folder is the user's.
    """
    metadata = read_metadata(folder)
    if metadata is None:
        return None
    return {*metadata.get("files", {}), METADATA_FILE, CARD_FILE, *(gguf_file_name(d) for d in ("f16", "f32"))}


def _output_claim(path: str | os.PathLike, overwrite: bool, overwrite_non_export: bool = False,
                  fix: str = "pass overwrite=True"):
    return claim_output(path, export_files, overwrite=overwrite, overwrite_non_export=overwrite_non_export, fix=fix)


def claim_export_folder(path: str | os.PathLike, overwrite: bool = False, overwrite_non_export: bool = False,
                        fix: str = "pass overwrite=True"):
    """Claim ``path`` for an export before slow work (a context manager; see :mod:`streamline_lib.export.output_folder`).

    It refuses at once what :func:`save_pruned` would refuse at the end: a symlink, the working
    directory or a folder above it, a non-empty folder without ``overwrite``, a folder with files
    that are not part of an export of ours without ``overwrite_non_export``, a folder another run
    is writing. ``fix`` ends the "not empty" message. Within the ``with`` block, a
    :func:`save_pruned` to the same path uses this claim.
    """
    return _output_claim(path, overwrite, overwrite_non_export, fix)


def _manifest(folder: Path) -> dict[str, dict[str, int | str]]:
    """Size and sha256 of every file of a finished export but its metadata and card (which ``eval`` rewrites)."""
    return {entry.name: file_digest(entry) for entry in sorted(folder.iterdir())
            if entry.is_file() and entry.name not in (METADATA_FILE, CARD_FILE)}


def _write_checkpoint(result: PruneResult | LayerSetPruneResult, tokenizer: PreTrainedTokenizerBase,
                      out: Path, storage: str) -> PreTrainedModel:
    """The model's weights and config and the tokenizer's files in ``out``; returns the model as stored."""
    model = result.model
    if storage == "transformers-zero-attention":
        model = copy.deepcopy(model)
        form = zero_attention_form(model, result.replacement)
        layer = _ffn_as_decoder_layer(model, result.start, get_layers(model)[result.start], form)
        replace_block(model, result.start, 1, layer)
    if storage == "streamline-ffn":
        model.config.save_pretrained(out)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        tied = [k for k in state if k.endswith("lm_head.weight")] if model.config.tie_word_embeddings else []
        save_file({k: v for k, v in state.items() if k not in tied}, out / CUSTOM_WEIGHTS_FILE)
    else:
        model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model


def software_versions() -> dict[str, str]:
    """The versions an export was made with: reproducing it bit for bit needs the same ones."""
    import transformers

    try:
        library = importlib.metadata.version("streamline-lib")
    except importlib.metadata.PackageNotFoundError:
        library = "not installed"
    return {"streamline_lib": library, "torch": torch.__version__, "transformers": transformers.__version__}


def _training_record(train: Any, config: Any) -> dict[str, Any] | None:
    if train is None:
        return None
    return {"config": _jsonable(config), "loss": train.loss, "steps": train.steps,
            "best_val_loss": train.best_val_loss, "baseline_val_loss": train.baseline_val_loss,
            "stopped_early": train.stopped_early, "wall_time_s": train.wall_time}


def _healing_record(healing: Any) -> dict[str, Any] | None:
    if healing is None:
        return None
    return {"method": "lora", "lora_parameters": healing.lora_parameters,
            "best_val_loss": healing.train_result.best_val_loss,
            "baseline_val_loss": healing.train_result.baseline_val_loss,
            "steps": healing.train_result.steps, "wall_time_s": healing.train_result.wall_time}


def _recipe_record(result: Any) -> dict[str, Any]:
    """What a :class:`~streamline_lib.pipeline.compress.CompressResult` adds: the recipe, verbatim, and its context."""
    if getattr(result, "recipe", None) is None:
        return {}
    shared = result.sharp
    return {"recipe": result.recipe.to_dict(), "source_dtype": result.source_dtype, "versions": software_versions(),
            "sharing": None if shared is None else {
                "layers": list(shared.layers), "references": list(shared.references), "rank": shared.rank,
                "recovery_parameters": shared.recovery_parameters,
                "stored": "every layer's MLP in full, the recovery merged in: sharing saves memory only at run time"}}


def save_pruned(
    result: Any,
    tokenizer: PreTrainedTokenizerBase,
    path: str | os.PathLike,
    source_model: str | None = None,
    metric: str | None = None,
    train_config: Any = None,
    overwrite: bool = False,
    healing: Any = None,
    overwrite_non_export: bool = False,
) -> Path:
    """Write ``result.model`` and ``tokenizer`` to ``path`` with a ``streamline.json``.

    ``result`` is a :class:`~streamline_lib.pipeline.compress.CompressResult`, which carries its
    recipe, source model and training, so nothing else is needed (its recipe is written into
    ``streamline.json`` verbatim, with the software versions, for ``streamline reproduce``); or a
    :class:`~streamline_lib.methods.pruning.PruneResult` or
    :class:`~streamline_lib.methods.pruning.LayerSetPruneResult` of the step-by-step functions,
    with ``source_model``, ``metric``, ``train_config`` and ``healing`` (the
    :class:`~streamline_lib.methods.healing.HealResult` when it was healed) given here.

    An existing folder is replaced only with ``overwrite`` and only when it holds an earlier
    export and nothing else (``overwrite_non_export`` replaces any folder but the working
    directory and those above it). The files are written to a folder beside ``path`` and
    swapped in by renames, so a failure or a killed process leaves ``path`` as it was
    (:mod:`streamline_lib.export.output_folder`). The same inputs give the same weight files, bit
    for bit.
    """
    if getattr(result, "recipe", None) is not None:
        source_model, metric, healing = result.source_model, result.metric, result.healing
        train_config = result.recipe.training if result.train_result is not None else None
    if source_model is None:
        raise ValueError("save_pruned needs source_model, the model the result was pruned from (a compress() "
                         "result carries it)")
    check_finite_weights(dict(result.model.named_parameters()), "the pruned model",
                         "refusing to save it: train it again with a lower learning rate")
    storage = _storage_format(result)
    with _output_claim(path, overwrite, overwrite_non_export) as claim:
        out = claim.new_folder()
        try:
            model = _write_checkpoint(result, tokenizer, out, storage)
            metadata = {
                "format_version": FORMAT_VERSION,
                "source_model": source_model,
                "start": result.start,
                "n": result.n,
                "removed_layers": list(result.removed_layers),
                "metric": metric,
                "replacement": result.replacement,
                "storage": storage,
                "loads_with": _loads_with(storage, model.config.model_type, result.replacement),
                "num_hidden_layers": model.config.num_hidden_layers,
                "parameters": sum(p.numel() for p in result.model.parameters()),  # the fast form's, tied once
                "training": _training_record(result.train_result, train_config),
                "linear_fit": None if result.linear_fit is None else _jsonable(result.linear_fit),
                "healing": _healing_record(healing),
                **_recipe_record(result),
                "files": _manifest(out),
            }
            atomic_write_text(out / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
            write_model_card(out, metadata)
            claim.replace_with(out)
        finally:
            if out.exists():
                shutil.rmtree(out, ignore_errors=True)
    return Path(path)


def _check_fields(file: Path, metadata: Any) -> None:
    """Refuse a ``streamline.json`` that is not what :func:`save_pruned` writes, naming the file and the field."""
    if not isinstance(metadata, dict):
        raise ValueError(f"{file} holds a JSON {type(metadata).__name__}, not the object save_pruned writes; "
                         "the export is damaged: save it again")
    for name, kinds in _FIELDS.items():
        if name not in metadata:
            raise ValueError(f"{file} has no {name!r}; the export is damaged or not ours: save it again")
        value = metadata[name]
        if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
            raise ValueError(f"{file}: {name!r} is {value!r}, which is not what save_pruned writes; "
                             "the export is damaged: save it again")
    if metadata["replacement"] not in REPLACEMENTS or metadata["storage"] not in STORAGE_FORMATS:
        raise ValueError(f"{file}: unknown replacement {metadata['replacement']!r} or storage "
                         f"{metadata['storage']!r}; the export is damaged or from a newer version")
    if not all(isinstance(i, int) and i >= 0 for i in metadata["removed_layers"]):
        raise ValueError(f"{file}: removed_layers must be layer numbers, got {metadata['removed_layers']!r}")


_FIELDS: dict[str, tuple[type, ...]] = {
    "format_version": (int,), "source_model": (str,), "start": (int, type(None)), "n": (int,),
    "removed_layers": (list,), "metric": (str, type(None)), "replacement": (str,), "storage": (str,),
    "loads_with": (str,), "num_hidden_layers": (int,), "parameters": (int,),
}
#: How an export stores its model: plain transformers, an FFN saved as a decoder layer whose
#: attention adds zero, or our own weights file (:data:`~streamline_lib.export.checkpoint.CUSTOM_WEIGHTS_FILE`).
STORAGE_FORMATS = ("transformers", "transformers-zero-attention", "streamline-ffn")


def read_metadata(path: str | os.PathLike) -> dict | None:
    """The ``streamline.json`` of a saved pruned model, checked; ``None`` for any other folder."""
    file = Path(path) / METADATA_FILE
    if not file.exists() and not file.is_symlink():
        return None
    refuse_symlink(file)
    try:
        metadata = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{file} is not valid JSON ({error}); the export is damaged: save it again") from None
    _check_fields(file, metadata)
    return metadata


def verify_export(path: str | os.PathLike) -> None:
    """Check every file of the export in ``path`` against the size and sha256 its manifest recorded.

    A truncated or changed weights file is refused with one line instead of failing deep in
    safetensors (or, worse, loading). Exports written before manifests existed are not checked.
    """
    path = Path(path)
    metadata = read_metadata(path)
    for name, recorded in (metadata or {}).get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing from the export; save it again")
        problem = digest_problem(file, recorded)
        if problem is not None:
            raise ValueError(f"{file} is truncated or changed since it was saved ({problem}); save the export again")


def record_evaluation(path: str | os.PathLike, evaluation: dict[str, Any]) -> bool:
    """Add ``evaluation`` to the ``streamline.json`` of an export and to its model card.

    ``evaluation`` holds ``tasks`` (per task ``acc`` and ``items``), ``average`` (``acc``),
    ``accuracy_interval`` (its 95% interval), ``items``, ``perplexity``, ``perplexity_tokens``
    and ``dtype``, as ``streamline eval`` measures them. Returns whether the card was rewritten: a ``README.md``
    the user wrote or edited is kept, and only ``streamline.json`` gets the numbers. Both files are
    written atomically and never through a symlink.
    """
    path = Path(path)
    refuse_symlink(path)
    previous = read_metadata(path)
    if previous is None:
        raise FileNotFoundError(f"{path} has no {METADATA_FILE}: it was not saved by save_pruned")
    refuse_symlink(path / CARD_FILE)  # before anything is written
    metadata = {**previous, "evaluation": evaluation}
    atomic_write_text(path / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
    return write_model_card(path, metadata, previous) is not None


def load_pruned(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Load a model saved by :func:`~streamline_lib.export.checkpoint.save_pruned`, with its FFN in the fast in-memory form."""
    path = Path(path)
    metadata = read_metadata(path)
    if metadata is None:
        raise FileNotFoundError(f"{path} has no {METADATA_FILE}: it was not saved by save_pruned")
    verify_export(path)
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
        kind = metadata["replacement"]
        ffn = make_ffn_like(model, kind)
        ffn.load_state_dict(zero_attention_form(model, kind).to_ffn(get_layers(model)[start].state_dict()))
        replace_block(model, start, 1, ffn.to(dtype))
    return model
