"""The model card (``README.md``) of an exported pruned model, for people and for the Hugging Face hub.

It is written from the export's ``streamline.json`` alone, so it always says what that file
says: the source model, the removed layers, the replacement and its training, what loads the
checkpoint, and evaluation numbers once ``streamline eval --model <folder>`` (or
:func:`streamline_lib.export.checkpoint.record_evaluation`) has recorded them. The YAML header carries the
fields the hub reads (``base_model``, ``library_name``, ``pipeline_tag``, ``tags``, ``license``).

A ``README.md`` that is not the card this module made from the current ``streamline.json``
(the user wrote or edited it) is left as it is: the user's own card is never overwritten.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..core.files import atomic_write_text, refuse_symlink
from ..registry import MODELS

__all__ = ["CARD_FILE", "plain", "model_card", "write_model_card"]

#: The model card's file in an export folder.
CARD_FILE = "README.md"


def plain(value: Any) -> str:
    """``value`` as Markdown text that shows as typed and can start no line, link, table cell or HTML tag.

    Every field a card takes from ``streamline.json`` goes through this: the file may have been
    edited, and a newline in ``source_model`` must not become a line of its own in the card.
    """
    text = str(value).encode("unicode_escape").decode("ascii")  # newlines and other controls as \\n ...
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~&])", r"\\\1", text)


def _bundled_source(metadata: dict[str, Any]):
    """The :class:`~streamline_lib.registry.BundledModel` the export was pruned from, or None."""
    return MODELS.get(metadata["source_model"])


def _yaml_header(metadata: dict[str, Any]) -> str:
    source = _bundled_source(metadata)
    lines = ["---"]
    if source is not None:
        lines += [f"base_model: {source.hub_id}", f"license: {source.license}"]
    lines += ["library_name: transformers" if metadata["storage"] != "streamline-ffn" else "library_name: custom",
              "pipeline_tag: text-generation", "tags:", "- layer-pruning", "- llm-streamline", "- streamline-book",
              "---"]
    return "\n".join(lines)


def _what_was_removed(metadata: dict[str, Any]) -> str:
    if (sharing := metadata.get("sharing")) is not None:
        return (f"nothing; layers {', '.join(map(str, sharing['layers']))} (0-based) run the MLP weights of the "
                f"layer below them (SHARP), with rank-{sharing['rank']} recovery updates merged in; "
                f"{plain(sharing['stored'])}")
    layers = metadata["removed_layers"]
    if metadata["start"] is not None:
        where = f"layers {layers[0]}-{layers[-1]} (0-based, {len(layers)} consecutive layers)"
    else:
        where = f"layers {', '.join(map(str, layers))} (0-based, {len(layers)} layers)"
    instead = {
        "none": "nothing: they are removed",
        "layer": "one decoder layer of the model's own class, trained to do the block's work",
        "ffn": "one residual SwiGLU feed-forward network, trained to do the block's work",
        "ffn_relu": "one residual, normed ReLU feed-forward network (the ReLU MLP of LLM-Streamline's example), "
                    "trained to do the block's work",
        "ffn_authors": "LLM-Streamline's feed-forward network as its authors build it, fc2(relu(fc1(h))) with no "
                       "residual and no norm, trained to do the block's work",
        "linear": "a linear map fitted on calibration text (ReplaceMe), folded into the layer before the block",
    }[metadata["replacement"]]
    return f"{where}; in their place: {instead}"


def _training(metadata: dict[str, Any]) -> list[str]:
    lines = []
    if (recipe := metadata.get("recipe")) is not None:
        lines.append(f"- recipe: method {plain(recipe['method'])}, seed {plain(recipe['seed'])}, every setting in "
                     "streamline.json; `streamline reproduce <this folder>` runs it again and compares the weights")
    if (train := metadata.get("training")) is not None:
        config = train.get("config") or {}
        lines.append(
            f"- replacement training: loss {plain(config.get('loss', '?'))}, {train['steps']:,} steps, "
            f"{train['wall_time_s'] / 60:.1f} min; best validation loss {train['best_val_loss']:.4g} "
            f"(plain removal: {train['baseline_val_loss']:.4g})")
    if (fit := metadata.get("linear_fit")) is not None:
        how = ("least squares" if fit.get("loss", "lstsq") == "lstsq"
               else f"cosine distance ({fit['steps']:,} Adam steps)")
        lines.append(f"- linear map: {how} on {fit['tokens']:,} token positions, {fit['seconds']:.0f} s; "
                     f"block-output error {fit['fitted_error']:.4g} (plain removal: {fit['removal_error']:.4g})")
    if (heal := metadata.get("healing")) is not None:
        lines.append(
            f"- healing: LoRA ({heal['lora_parameters']:,} parameters, merged), {heal['steps']:,} steps, "
            f"{heal['wall_time_s'] / 60:.1f} min; best validation loss {heal['best_val_loss']:.4g} "
            f"(before: {heal['baseline_val_loss']:.4g})")
    return lines or ["- nothing was trained"]


def _evaluation(metadata: dict[str, Any]) -> list[str]:
    result = metadata.get("evaluation")
    if result is None:
        return ["Not evaluated yet: `streamline eval --model <this folder>` measures zero-shot accuracy and "
                "perplexity and adds them here."]
    lines = ["| task | accuracy | items |", "|---|---|---|"]
    lines += [f"| {plain(task)} | {row['acc']:.4f} | {row['items']:,} |" for task, row in result["tasks"].items()]
    low, high = result["accuracy_interval"]
    lines.append(f"| **average** | **{result['average']['acc']:.4f}** [{low:.4f}, {high:.4f}] | {result['items']:,} |")
    lines += ["", f"Held-out Wikipedia perplexity: {result['perplexity']:.2f} ({result['perplexity_tokens']:,} tokens). "
              f"Measured with streamline_lib in {plain(result['dtype'])}, zero-shot; the average's 95% interval (in brackets) "
              "is a bootstrap over the items."]
    return lines


def model_card(metadata: dict[str, Any]) -> str:
    """The card's text for an export whose ``streamline.json`` is ``metadata``."""
    source = _bundled_source(metadata)
    source_name = plain(source.hub_id if source is not None else metadata["source_model"])
    loads_with = metadata.get("loads_with", "")
    if loads_with.startswith("transformers"):
        code = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")\n'
                'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")')
    else:
        code = ("from streamline_lib.models import load_model\n"
                'model, tokenizer = load_model("path/to/this/folder")')
    sections = [
        _yaml_header(metadata), "",
        f"# {source_name}, " + (f"layer-pruned ({metadata['n']} of its layers removed)" if metadata.get("sharing")
                                 is None else f"with {len(metadata['sharing']['layers'])} layers' MLPs shared"), "",
        f"A pruned copy of {source_name} made with streamline_lib (the streamline-book library). "
        f"Removed: {_what_was_removed(metadata)}. "
        f"Chosen by: {plain(metadata['metric'] or 'given by hand')}. The model has {metadata['num_hidden_layers']} "
        f"decoder layers and {metadata['parameters']:,} parameters.", "",
        "## How it was made", "", *_training(metadata), "",
        "## How to load it", "", plain(loads_with) + ".", "", "```python", code, "```", "",
        "## Evaluation", "", *_evaluation(metadata), "",
        "## Limitations", "",
        "Layer pruning removes knowledge as well as computation: check the model on your own task before you use "
        "it. The source model's licence and terms of use apply to this copy. `streamline.json` holds every "
        "setting and result above in machine-readable form.", "",
    ]
    return "\n".join(sections)


def write_model_card(path: str | os.PathLike, metadata: dict[str, Any], previous: dict[str, Any] | None = None
                     ) -> Path | None:
    """Write ``path/README.md`` from ``metadata``; ``None`` (nothing written) if the user's card is there.

    ``previous`` is the ``streamline.json`` the existing card was made from: a card that is no
    longer exactly ``model_card(previous)`` was written or edited by someone, and is kept.
    """
    card = Path(path) / CARD_FILE
    refuse_symlink(card)  # a card linked elsewhere (~/.profile ...) is never written through
    if card.exists() and (previous is None or card.read_text(encoding="utf-8") != model_card(previous)):
        return None
    atomic_write_text(card, model_card(metadata))
    return card
