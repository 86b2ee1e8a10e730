"""A recipe: every setting of one compression run, validated, frozen and written into its export.

A :class:`Recipe` says which method removes what (``block``: LLM-Streamline's most redundant
consecutive block, with any replacement; ``shortgpt``, ``sleb``: layers that need not be
neighbours; ``replaceme``: the block with ReplaceMe's linear map (``linear_loss``: least squares
or cosine distance); ``sharp``: SHARP's
shared MLPs with low-rank recovery), how much (``layers``, or a ``sparsity`` of all parameters
or of the decoder layers'), how anything is trained or healed (:class:`~streamline_lib.methods.training.TrainConfig`,
:class:`~streamline_lib.methods.healing.LoraSettings`), and from which text (:class:`DataSpec`, and one ``seed`` for the data
and the training). :func:`streamline_lib.pipeline.compress.compress` runs it; the export keeps
it verbatim, so ``streamline reproduce`` can run it again.

Recipes read and write JSON and YAML (:meth:`Recipe.load`, :meth:`Recipe.save`). Unknown keys
and impossible values are refused with one line that names the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.files import atomic_write_text
from ..data.text_data import CORPORA, SPLITS
from ..methods.healing import LoraSettings, check_healing_config
from ..methods.linear_replacement import LINEAR_LOSSES
from ..methods.replacement import REPLACEMENTS
from ..methods.scoring import METRICS
from ..methods.sparsity import COUNTS
from ..methods.training import TrainConfig

__all__ = ["METHODS", "HEALING", "DataSpec", "Recipe", "RecipeError"]

METHODS = ("block", "shortgpt", "sleb", "replaceme", "sharp")
"""``block``: LLM-Streamline; ``shortgpt``, ``sleb``: layer sets; ``replaceme``: block + linear map; ``sharp``."""
#: A recipe's ``heal`` choices: ``none``, or LoRA on the pruned model.
HEALING = ("none", "lora")
_NOT_IN_RECIPE = ("seed", "progress")  # a TrainConfig's seed is the recipe's; progress bars are not a setting


class RecipeError(ValueError):
    """A recipe that cannot run: an unknown key, a value of the wrong type, an impossible combination."""


@dataclass(frozen=True)
class DataSpec:
    """Which token windows: ``num_seqs`` windows of ``seq_len`` tokens from one split of a bundled corpus."""

    corpus: str = "wiki"
    split: str = "calibration"
    num_seqs: int = 32
    seq_len: int = 256

    def __post_init__(self) -> None:
        _require(self.corpus in CORPORA, f"corpus {self.corpus!r}: choose one of {', '.join(CORPORA)}")
        _require(self.split in SPLITS, f"split {self.split!r}: choose one of {', '.join(SPLITS)}")
        _require(self.num_seqs >= 1, f"num_seqs={self.num_seqs}: ask for at least one sequence")
        _require(self.seq_len >= 2, f"seq_len={self.seq_len}: a window needs at least 2 tokens")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RecipeError(message)


@dataclass(frozen=True)
class Recipe:
    """Every setting of one run of :func:`~streamline_lib.pipeline.compress.compress` (see the module docstring).

    Exactly one of ``layers`` and ``sparsity``: for ``sharp`` they are how many layers reuse
    the MLP below them, or the share of parameters that sharing (net of the recovery
    parameters) is to save; for the other methods, how many layers are taken out, or the
    share of parameters removed net of the replacement put in their place (a ``layer``
    replacement takes out one layer more than plain removal, as the authors' code does, so
    that both remove the same parameters). ``replacement`` and ``metric`` apply to ``block``;
    ``replaceme`` is ``block`` with ``replacement="linear"`` and the cosine metric;
    ``linear_loss`` says how that map is fitted (ReplaceMe's two variants, ``"lstsq"`` or
    ``"cosine"``: :func:`~streamline_lib.methods.linear_replacement.fit_linear_map`). ``heal``
    ``"lora"`` fine-tunes LoRA updates (``lora``) after any method but ``sharp``, with
    ``healing``; ``sharp`` warms its recovery up with ``training`` on the first
    ``warmup_seqs`` training windows and fine-tunes it with ``healing``.
    """

    method: str = "block"
    layers: int | None = None
    sparsity: float | None = None
    sparsity_of: str = "total"
    metric: str = "cosine"
    replacement: str = "none"
    linear_loss: str = "lstsq"
    heal: str = "none"
    training: TrainConfig = field(default_factory=TrainConfig)
    healing: TrainConfig = field(default_factory=lambda: TrainConfig(loss="lm", epochs=1))
    lora: LoraSettings = field(default_factory=LoraSettings)
    warmup_seqs: int | None = None
    calibration: DataSpec = field(default_factory=DataSpec)
    train_data: DataSpec = field(default_factory=lambda: DataSpec(split="train", num_seqs=1024))
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.method in METHODS, f"method {self.method!r}: choose one of {', '.join(METHODS)}")
        _require((self.layers is None) != (self.sparsity is None),
                 "give exactly one of layers (how many) and sparsity (a fraction of the parameters)")
        _require(self.layers is None or self.layers >= 1, f"layers={self.layers}: remove at least one layer")
        _require(self.sparsity is None or 0 < self.sparsity < 1,
                 f"sparsity={self.sparsity} must be strictly between 0 and 1, e.g. 0.25")
        _require(self.sparsity_of in COUNTS, f"sparsity_of {self.sparsity_of!r}: choose one of {', '.join(COUNTS)}")
        _require(self.metric in METRICS, f"metric {self.metric!r}: choose one of {', '.join(METRICS)}")
        _require(self.replacement in REPLACEMENTS,
                 f"replacement {self.replacement!r}: choose one of {', '.join(REPLACEMENTS)}")
        _require(self.linear_loss in LINEAR_LOSSES,
                 f"linear_loss {self.linear_loss!r}: choose one of {', '.join(LINEAR_LOSSES)}")
        _require(self.heal in HEALING, f"heal {self.heal!r}: choose one of {', '.join(HEALING)}")
        _require(self.warmup_seqs is None or self.warmup_seqs >= 1, f"warmup_seqs={self.warmup_seqs}: at least 1")
        if self.method == "replaceme":
            _require(self.replacement in ("none", "linear") and self.metric == "cosine",
                     "method replaceme is the cosine block with ReplaceMe's linear map: drop replacement and metric")
            object.__setattr__(self, "replacement", "linear")
        _require(self.linear_loss == "lstsq" or self.replacement == "linear",
                 f"linear_loss {self.linear_loss!r} fits ReplaceMe's map: use method replaceme (or replacement "
                 "linear), or drop linear_loss")
        if self.method in ("shortgpt", "sleb", "sharp"):
            _require(self.replacement == "none", f"method {self.method} leaves nothing in place of what it "
                                                 "removes: drop replacement, or use method block")
        _require(self.method != "sharp" or self.heal == "none",
                 "method sharp recovers with its own low-rank updates: drop heal")
        _require(self.calibration.split != "heldout" and self.train_data.split != "heldout",
                 "the heldout split is for evaluation only: calibrate and train on calibration or train")
        try:
            check_healing_config(self.healing)
        except ValueError as error:
            raise RecipeError(f"healing: {error}") from None
        for name in ("training", "healing"):  # the recipe's one seed seeds the training too
            object.__setattr__(self, name, dataclasses.replace(getattr(self, name), seed=self.seed, progress=True))

    # -- reading and writing -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Every setting, JSON-able, in field order (the form written into an export)."""
        data = dataclasses.asdict(self)
        for name in ("training", "healing"):
            for key in _NOT_IN_RECIPE:
                data[name].pop(key)
        data["lora"]["target_modules"] = _jsonable(data["lora"]["target_modules"])
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        """A recipe from a mapping as :meth:`to_dict` writes it (missing keys take their defaults)."""
        return _build(cls, data, "recipe")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write the recipe as JSON, or YAML when ``path`` ends in ``.yaml`` / ``.yml``."""
        path = Path(path)
        text = yaml.safe_dump(self.to_dict(), sort_keys=False) if _is_yaml(path) else self.to_json()
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recipe:
        """Read a recipe file: JSON, or YAML for ``.yaml`` / ``.yml``; refused with the file's name if unreadable."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = yaml.safe_load(text) if _is_yaml(path) else json.loads(text)
        except FileNotFoundError:
            raise FileNotFoundError(f"no recipe file {path}") from None
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
            raise RecipeError(f"{path} is not a readable recipe ({type(error).__name__}: "
                              f"{str(error).splitlines()[0]})") from None
        try:
            return cls.from_dict(data)
        except RecipeError as error:
            raise RecipeError(f"{path}: {error}") from None


def _is_yaml(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` converted to the type ``hint`` (a JSON list to a tuple, an int to a float), or RecipeError."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if dataclasses.is_dataclass(option) and isinstance(value, dict):
            return _build(option, value, where)
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option in (int, str, bool) and type(value) is option:
            return value
        if typing.get_origin(option) is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    raise RecipeError(f"{where} is {value!r}, which is not a {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    names = {type(None): "null", int: "whole number", float: "number", str: "string", bool: "true/false"}
    return " or ".join(names.get(o, getattr(o, "__name__", str(o))) for o in options)


def _build(cls: type, data: Any, where: str) -> Any:
    """``cls(**data)`` for a dataclass, refusing unknown keys and values of the wrong type, naming them."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where} must be a mapping of settings, not a {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init and (cls is not TrainConfig or f.name not in
                                                                     _NOT_IN_RECIPE)]
    unknown = [key for key in data if key not in known]
    if unknown:
        extra = " (the recipe's seed seeds the training)" if "seed" in unknown and cls is TrainConfig else ""
        raise RecipeError(f"{where} has unknown key(s) {', '.join(map(repr, unknown))}{extra}; "
                          f"known: {', '.join(known)}")
    values = {key: _check_value(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except RecipeError:
        raise
    except (ValueError, TypeError) as error:
        raise RecipeError(f"{where}: {error}") from None
