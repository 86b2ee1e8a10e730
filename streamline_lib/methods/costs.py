"""What a pruning method costs to run: wall time and peak memory, measured the same way for every method.

LLM-Streamline's case against LoRA healing is memory (claim C8): its replacement
trains on hidden states computed once, while LoRA runs the whole model forward and
backward at every step. :func:`training_cost` measures one method's training in a
fresh Python process, so nothing else the caller holds (other models, caches, a
notebook's variables) counts, and every method is measured alike; :func:`sleb_cost`
(SLEB's search) and :func:`sharp_cost` (SHARP's recovery) go through the same
:func:`measure_cost`:

* ``model_rss``: resident memory once the dense model is loaded (the common floor);
* ``peak_rss``: the process's peak resident memory from then until training ends,
  which includes the method's own copies (the pruned model, the MSE pairs, activations,
  gradients and optimizer state);
* ``seconds``: wall time of the training call, dense hidden-state pass included.

The peak is the kernel's high-water mark of the process (``VmHWM``), reset after the
model is loaded where Linux allows it (``/proc/self/clear_refs``), else the lifetime
peak (``ru_maxrss``), which loading a model only can keep below a training's. This is
CPU memory: on a GPU, compare ``torch.cuda.max_memory_allocated()`` instead. Trained
weights land in the on-disk cache of :func:`streamline_lib.methods.pruning.prune` and
:func:`streamline_lib.methods.healing.heal_with_lora`, so the caller gets the same model back
from those functions without training again; measurements are cached too (``cache``).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..core.results_cache import cache_location, fingerprint, load_result, model_fingerprint, results_dir, store_result
from ..models.loading import load_model
from .healing import LoraSettings, check_healing_config, heal_with_lora
from .pruning import prune
from .replacement import REPLACEMENTS
from .scoring import sleb_layers
from .sharing import sharp
from .trained_cache import cache_folder, training_key
from .training import TrainConfig, TrainResult

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["METHODS", "TrainingCost", "training_cost", "measure_cost", "sleb_cost", "sharp_cost"]

#: The methods :func:`training_cost` measures: LoRA healing and every trained replacement.
METHODS: tuple[str, ...] = ("lora", *(kind for kind in REPLACEMENTS if kind != "none"))


@dataclass(frozen=True)
class TrainingCost:
    """Wall time and memory of one method's training, measured in a fresh process."""

    method: str  # "lora" (heal plain removal with LoRA), a replacement kind, "sleb" or "sharp"
    seconds: float  # wall time of the training call
    model_rss: int  # bytes resident once the dense model was loaded
    peak_rss: int  # bytes: the process's peak resident memory while pruning and training
    train_result: TrainResult | None  # None for what is fitted or chosen, not trained (the linear map, SLEB)

    @property
    def extra_rss(self) -> int:
        """Peak memory beyond the loaded dense model: what the method itself needed."""
        return self.peak_rss - self.model_rss


def training_cost(
    dense: PreTrainedModel,
    model_name: str,
    start: int,
    n: int,
    method: str,
    sequences: torch.Tensor,
    config: TrainConfig | None = None,
    lora: LoraSettings | None = None,
    cache: bool | str | os.PathLike = False,
) -> TrainingCost:
    """Measure training ``method`` on block ``start .. start+n-1`` in a fresh process.

    ``dense`` is the model ``model_name`` loads (:func:`streamline_lib.models.loading.load_model`,
    in ``dense``'s dtype); the fresh process loads it again and refuses to go on if its
    weights differ. ``method`` is ``"lora"`` (plain removal healed by
    :func:`~streamline_lib.methods.healing.heal_with_lora`; ``config`` must have ``loss="lm"``) or
    a replacement kind trained by :func:`~streamline_lib.methods.pruning.prune` with ``config`` (for
    ``"linear"`` the closed-form fit of ReplaceMe's map, which ``prune`` redoes rather than caches).
    ``cache`` (False, True or a folder, as in :mod:`streamline_lib.core.results_cache`)
    keeps the measurement on disk (keyed by everything that decides the training) and puts
    the trained weights in the training cache, so that ``prune(..., cache=...)`` or
    ``heal_with_lora(..., cache=...)`` with the same ``cache`` returns the trained model at once.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    config = config or (TrainConfig(loss="lm") if method == "lora" else TrainConfig())
    if method == "lora":
        check_healing_config(config)  # before a process is started
    lora = lora or LoraSettings()
    key = training_key("training-cost", dense, sequences, config, start=start, n=n, method=method,
                       lora=dataclasses.asdict(lora) if method == "lora" else None)
    job = partial(_train_block, start, n, method, sequences, config, lora)
    return measure_cost(dense, model_name, method, job, key, _trained_destination(cache), cache_location(cache))


def measure_cost(
    dense: PreTrainedModel,
    model_name: str,
    method: str,
    job: Callable[[list[PreTrainedModel], str], TrainResult | None],
    key: dict[str, Any],
    destination: Path | None,
    results: Path | None = None,
) -> TrainingCost:
    """Run ``job([dense], folder)`` in a fresh process that loads ``model_name``, and measure it.

    The building block of :func:`training_cost`, :func:`sleb_cost` and :func:`sharp_cost`.
    ``job`` must be picklable (a module-level function or a ``functools.partial`` of
    one); it gets a one-element list holding the freshly loaded dense model (popping it
    is the job's only reference, so it can free the model once it has what it needs) and
    a folder to cache what it makes, and returns its training record (or None). ``key``
    holds everything that decides the job (it must include the dense model's ``"model"``
    fingerprint). With a ``destination`` the
    measurement is cached under ``key`` (in ``results``, default :func:`~streamline_lib.core.results_cache.results_dir`) and
    what the job cached is moved there, so the caller's own cached call then returns at
    once; None measures afresh and keeps nothing.
    """
    folder = results or results_dir()
    if destination is not None:
        cached = load_result(folder, key, _cost_from_json)
        if cached is not None:
            return cached
    with tempfile.TemporaryDirectory(prefix="method_cost_") as made:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of ours in memory
        with context.Pool(1) as pool:
            cost = pool.apply(_measure, (model_name, dense.dtype, key["model"], method, job, made))
        if destination is not None:
            for path in sorted(Path(made).iterdir(), key=lambda p: p.suffix != ".safetensors"):  # records last
                shutil.move(str(path), destination / path.name)
            store_result(folder, key, dataclasses.asdict(cost))
    return cost


def sleb_cost(dense: PreTrainedModel, model_name: str, sequences: torch.Tensor, n: int, batch_size: int = 8,
              cache: bool | str | os.PathLike = False) -> TrainingCost:
    """Measure SLEB's greedy choice of ``n`` layers (:func:`~streamline_lib.methods.scoring.sleb_layers`) in a fresh process.

    ``cache`` (False, True or a folder, as in :mod:`streamline_lib.core.results_cache`) keeps
    the measurement, and the choice itself lands in the results cache, so ``sleb_layers(...,
    cache=...)`` with the same ``cache`` on the same model, tokens, ``n`` and ``batch_size``
    returns it at once.
    """
    key = {"kind": "sleb-cost", "model": model_fingerprint(dense), "tokens": fingerprint(sequences.tolist()),
           "n": n, "batch_size": batch_size, "torch": torch.__version__}
    job = partial(_choose_sleb, sequences, n, batch_size)
    results = cache_location(cache)
    return measure_cost(dense, model_name, "sleb", job, key, results, results)


def sharp_cost(dense: PreTrainedModel, model_name: str, layers: Sequence[int], rank: int, alpha: float,
               slw_sequences: torch.Tensor, slw_config: TrainConfig, sft_sequences: torch.Tensor,
               sft_config: TrainConfig, seed: int = 0, cache: bool | str | os.PathLike = False) -> TrainingCost:
    """Measure SHARP's two recovery stages (:func:`~streamline_lib.methods.sharing.sharp`) in a fresh process.

    The time and memory are those of the warm-up and the fine-tuning together; the
    record returned is the fine-tuning's. ``cache`` (False, True or a folder, as in
    :mod:`streamline_lib.core.results_cache`) keeps the measurement and puts the trained
    recovery parameters in the training cache, so ``sharp(..., cache=...)`` with the same
    ``cache`` and settings returns the model at once.
    """
    settings = {"layers": sorted(layers), "rank": rank, "alpha": alpha, "seed": seed}
    warmup = training_key("sharp-warmup", dense, slw_sequences, slw_config, **settings)
    key = training_key("sharp-cost", dense, sft_sequences, sft_config, **settings, warmup=warmup)
    job = partial(_share_and_recover, sorted(layers), rank, alpha, slw_sequences, slw_config, sft_sequences,
                  sft_config, seed)
    return measure_cost(dense, model_name, "sharp", job, key, _trained_destination(cache), cache_location(cache))


def _trained_destination(cache: bool | str | os.PathLike) -> Path | None:
    """Where a measured job's trained weights go: the training cache ``cache`` means, None for False."""
    return None if cache is False else cache_folder(cache)


def _train_block(start: int, n: int, method: str, sequences: torch.Tensor, config: TrainConfig,
                 lora: LoraSettings, models: list[PreTrainedModel], folder: str) -> TrainResult | None:
    dense = models.pop()
    if method == "lora":
        pruned = prune(dense, start, n, replacement="none").model
        del dense  # healing needs only the pruned model
        return heal_with_lora(pruned, sequences, config=config, lora=lora, cache=folder).train_result
    return prune(dense, start, n, replacement=method, train_sequences=sequences, train_config=config,
                 cache=folder).train_result


def _choose_sleb(sequences: torch.Tensor, n: int, batch_size: int, models: list[PreTrainedModel], folder: str) -> None:
    sleb_layers(models.pop(), sequences, n, batch_size, progress=False, cache=folder)


def _cost_from_json(data: dict) -> TrainingCost:
    record = data.pop("train_result")
    return TrainingCost(**data, train_result=None if record is None else TrainResult.from_json(record))


def _rss_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _lifetime_peak() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kibibytes on Linux


def _measure(model_name: str, dtype: torch.dtype, fingerprint: str, method: str,
             job: Callable[[list[PreTrainedModel], str], TrainResult | None], folder: str) -> TrainingCost:
    """In the fresh process: load, check and run ``job``, with the clock and the memory mark running."""
    dense, _ = load_model(model_name, dtype=dtype)
    if model_fingerprint(dense) != fingerprint:
        raise ValueError(f"load_model({model_name!r}) gives other weights than the model passed as dense: pass "
                         "the name or folder the dense model was loaded from, unchanged")
    model_rss = _rss_bytes("VmRSS") or _lifetime_peak()
    reset = _reset_peak()
    began = time.perf_counter()
    models = [dense]
    del dense  # the job holds the only reference
    trained = job(models, folder)
    seconds = time.perf_counter() - began
    peak = (_rss_bytes("VmHWM") if reset else None) or _lifetime_peak()
    return TrainingCost(method, seconds, model_rss, peak, trained)


def _share_and_recover(layers: list[int], rank: int, alpha: float, slw_sequences: torch.Tensor,
                       slw_config: TrainConfig, sft_sequences: torch.Tensor, sft_config: TrainConfig, seed: int,
                       models: list[PreTrainedModel], folder: str) -> TrainResult | None:
    return sharp(models.pop(), layers, rank=rank, alpha=alpha, slw_sequences=slw_sequences, slw_config=slw_config,
                 sft_sequences=sft_sequences, sft_config=sft_config, seed=seed, cache=folder).sft_result
