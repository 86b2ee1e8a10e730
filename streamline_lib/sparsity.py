"""Where a model's parameters are, and what a sparsity target means for it.

For Llama2-7B the embedding and LM head are 4% of the parameters, so "25% of
the parameters" and "25% of the layers" are nearly the same thing. For a small
model with a large vocabulary they are not: SmolLM2-135M keeps 21% of its
parameters in its (tied) embedding, so removing a quarter of all parameters
means removing far more than a quarter of its layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .layers import get_layers, lm_head

__all__ = ["ParameterBudget", "parameter_budget"]


def _unique_numel(modules: list[nn.Module], seen: set[int]) -> int:
    """Parameters of ``modules`` not already counted in ``seen`` (tied weights count once)."""
    total = 0
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


@dataclass(frozen=True)
class ParameterBudget:
    """Parameter counts of a causal LM, each shared tensor counted once."""

    total: int
    embedding: int  # input token embedding (and the LM head when tied)
    lm_head: int  # 0 when the head is tied to the embedding
    layers: int  # all decoder layers together
    per_layer: tuple[int, ...]
    other: int  # final norm, position embeddings, ...

    @property
    def embedding_fraction(self) -> float:
        return (self.embedding + self.lm_head) / self.total


def parameter_budget(model: nn.Module) -> ParameterBudget:
    """Split the model's parameters into embedding, LM head, decoder layers and the rest."""
    seen: set[int] = set()
    embedding = _unique_numel([model.get_input_embeddings()], seen)
    head = _unique_numel([lm_head(model)], seen)
    per_layer = tuple(_unique_numel([layer], seen) for layer in get_layers(model))
    total = sum(p.numel() for p in model.parameters())  # .parameters() already skips tied duplicates
    other = total - embedding - head - sum(per_layer)
    return ParameterBudget(total, embedding, head, sum(per_layer), per_layer, other)
