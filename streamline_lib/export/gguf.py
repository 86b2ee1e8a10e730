"""Write a pruned model as a GGUF file for llama.cpp (and Ollama, LM Studio, ...), and check it.

A pruned export whose checkpoint is a plain transformers model (``loads_with`` in its
``streamline.json`` starts with ``transformers``: plain removal, a layer, ReplaceMe's folded map,
an FFN stored as a zero-attention layer) is an ordinary model of its architecture with fewer
layers, so a GGUF file of it is the source model's GGUF with a smaller ``block_count``. The
``gguf`` package supplies the writer, the tensor names (``get_tensor_name_map``) and the
tokenizer reading (``BpeVocab``, ``SpecialVocab``); this module adds only what llama.cpp's own
converter (``convert_hf_to_gguf.py``, which is not on PyPI) does for the llama architecture:
the header fields, and the row order of the query and key projections that llama.cpp's rotary
embedding expects.

Only the llama architecture (SmolLM2, Llama, and every llama-shaped model) is written; others are
refused with the reason. Gemma 3 is left out on purpose: llama.cpp derives its sliding-window
layer pattern from the layer index, which removing layers shifts, and stores its norms as
``1 + weight``. :func:`gguf_logits` reads the file back with transformers' GGUF loader, so an
export can be checked against the folder it came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf.vocab import BpeVocab, SpecialVocab
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from ..core.files import default_file_mode, refuse_symlink, remove_stale_temporaries, temporary_name
from ..registry import MODELS
from .checkpoint import gguf_file_name, read_metadata

__all__ = ["GGUF_DTYPES", "GGUFExport", "default_gguf_path", "check_gguf_target", "export_gguf", "gguf_logits"]

GGUF_DTYPES: dict[str, tuple[np.dtype, gguf.LlamaFileType]] = {
    "f16": (np.dtype(np.float16), gguf.LlamaFileType.MOSTLY_F16),
    "f32": (np.dtype(np.float32), gguf.LlamaFileType.ALL_F32),
}
"""The GGUF weight types written: float16 (llama.cpp's usual unquantised type) or float32.
Quantise further with llama.cpp's ``llama-quantize`` if you want a smaller file."""


@dataclass(frozen=True)
class GGUFExport:
    """A GGUF file written by :func:`export_gguf`."""

    path: Path
    size_bytes: int
    tensors: int
    dtype: str


def _check_llama(config: PretrainedConfig, folder: Path) -> None:
    if config.model_type != "llama":
        raise ValueError(
            f"{folder} is a {config.model_type!r} model; the GGUF export writes the llama architecture only "
            "(SmolLM2, Llama and llama-shaped models). Gemma 3 is not written: llama.cpp derives its "
            "sliding-window pattern from the layer index, which removing layers shifts.")
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default" or config.attention_bias or config.mlp_bias:
        raise ValueError(f"{folder}: rope scaling {rope.get('rope_type')!r}, attention or MLP biases are not "
                         "written by this exporter; use llama.cpp's convert_hf_to_gguf.py on the folder")


def _rotary_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder a query or key projection's rows from transformers' rotary layout to llama.cpp's.

    transformers rotates the two halves of each head, llama.cpp interleaved pairs; llama.cpp's
    converter permutes the rows so, and transformers' GGUF loader undoes it.
    """
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def _add_header(writer: gguf.GGUFWriter, config: PretrainedConfig, name: str, file_type: gguf.LlamaFileType) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)


def _add_tokenizer(writer: gguf.GGUFWriter, folder: Path, pre: str) -> None:
    """The folder's byte-level BPE tokenizer (tokenizer.json), as llama.cpp's ``gpt2`` tokenizer model."""
    try:
        vocab = BpeVocab(folder)
    except FileNotFoundError as error:
        raise ValueError(f"{folder}: the GGUF export needs a byte-level BPE tokenizer.json ({error})") from None
    added = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens", [])
    special = {token["id"] for token in added if token.get("special")}
    tokens = [text if isinstance(text, bytes) else text.encode("utf-8") for text, _, _ in vocab.all_tokens()]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(len(tokens))])
    SpecialVocab(folder, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


def _source_tokenizer_pre(source_model: str | None) -> str:
    """llama.cpp's pre-tokenizer name: the bundled source model's (its GGUF's), else ``default``."""
    return MODELS[source_model].gguf_tokenizer_pre if source_model in MODELS else "default"


def default_gguf_path(folder: str | os.PathLike, dtype: str) -> Path:
    """Where :func:`export_gguf` writes by default: ``<folder>/model-<dtype>.gguf``."""
    return Path(folder) / gguf_file_name(dtype)


GGUF_MAGIC = b"GGUF"


def check_gguf_target(out: str | os.PathLike, overwrite: bool) -> None:
    """Refuse a GGUF target that is a symlink or a folder, an existing file without ``overwrite``,
    and, even with it, an existing file that is not a GGUF file (it is someone's, not an earlier export)."""
    out = Path(out)
    refuse_symlink(out)
    if out.is_dir():
        raise FileExistsError(f"{out} is a folder; give the GGUF file's path, e.g. {out / gguf_file_name('f16')}")
    if not out.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{out} exists; choose another file or pass --force (overwrite=True) to replace it")
    with open(out, "rb") as existing:
        if existing.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise FileExistsError(f"{out} is not a GGUF file, so it is not an earlier export; refusing to replace "
                                  "it: choose another file")


def _publish(partial: Path, out: Path, overwrite: bool) -> None:
    """Move the finished file in: replacing only with ``overwrite``, else only if nobody made ``out`` meanwhile."""
    partial.chmod(default_file_mode())  # not the 0600 of a temporary: a llama.cpp server user must read it
    if overwrite:
        os.replace(partial, out)
        return
    try:
        os.link(partial, out)  # fails if out exists: the check and the write are one step
    except FileExistsError:
        raise FileExistsError(f"{out} was written by another run meanwhile; choose another file or pass --force") \
            from None


def export_gguf(folder: str | os.PathLike, out: str | os.PathLike | None = None, dtype: str = "f16",
                overwrite: bool = False) -> GGUFExport:
    """Write the export in ``folder`` (a plain-transformers one, see the module docstring) as one GGUF file.

    ``out`` defaults to :func:`default_gguf_path`. An existing file is kept unless
    ``overwrite``; the file is written under a temporary name first, so a failure leaves nothing
    half-written. Two-dimensional weights get ``dtype`` (``f16`` or ``f32``), norms stay float32
    as llama.cpp expects.
    """
    folder = Path(folder)
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(GGUF_DTYPES)}")
    metadata = read_metadata(folder)
    if metadata is not None and not metadata["loads_with"].startswith("transformers"):
        raise ValueError(f"{folder} holds a {metadata['replacement']!r} replacement that no layer of its "
                         "architecture computes; only plain-transformers exports can be written as GGUF "
                         f"(this one loads with {metadata['loads_with']})")
    config = AutoConfig.from_pretrained(folder)
    _check_llama(config, folder)
    out = Path(out) if out is not None else default_gguf_path(folder, dtype)
    check_gguf_target(out, overwrite)
    weight_type, file_type = GGUF_DTYPES[dtype]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    state = model.state_dict()
    if config.tie_word_embeddings:  # llama.cpp reuses token_embd when there is no output tensor
        state.pop("lm_head.weight", None)
    remove_stale_temporaries(out.parent)  # a GGUF half-written by a killed run
    partial = out.with_name(temporary_name(out.name))
    try:
        writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        source = metadata["source_model"] if metadata else None
        _add_header(writer, config, f"{source or folder.name} (layer-pruned)", file_type)
        _add_tokenizer(writer, folder, _source_tokenizer_pre(source))
        for key, tensor in state.items():
            name = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise ValueError(f"{folder}: no GGUF name for the tensor {key!r}")
            if key.endswith("self_attn.q_proj.weight"):
                tensor = _rotary_rows(tensor, config.num_attention_heads)
            elif key.endswith("self_attn.k_proj.weight"):
                tensor = _rotary_rows(tensor, config.num_key_value_heads)
            array = tensor.numpy()
            if array.ndim > 1:
                if dtype == "f16" and np.abs(array).max() > np.finfo(np.float16).max:
                    raise ValueError(f"{key} holds values beyond float16's range; use dtype='f32'")
                array = array.astype(weight_type)
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        _publish(partial, out, overwrite)
    finally:
        partial.unlink(missing_ok=True)
    return GGUFExport(out, out.stat().st_size, len(state), dtype)


def gguf_logits(path: str | os.PathLike, input_ids: torch.Tensor) -> torch.Tensor:
    """The logits of a GGUF file for ``input_ids``, loaded back with transformers' GGUF reader (float32)."""
    path = Path(path)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids).logits
