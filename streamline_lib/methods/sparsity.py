"""Where a model's parameters are, and what a sparsity target means for it.

For Llama2-7B the embedding and LM head are 4% of the parameters, so "25% of
the parameters" and "25% of the layers" are nearly the same thing. For a small
model with a large vocabulary they are not: SmolLM2-135M keeps 21% of its
parameters in its (tied) embedding, so removing a quarter of all parameters
means removing far more than a quarter of its layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from ..architecture.layers import get_layers, lm_head

COUNTS: tuple[str, ...] = ("total", "layers")
"""What a sparsity is a fraction of: all parameters (the paper's count) or decoder-layer parameters only."""

__all__ = ["COUNTS", "ParameterBudget", "SparsityReport", "parameter_budget", "check_sparsity", "counted_parameters",
           "layers_for_sparsity", "sparsity_report", "BUDGET_FORMATS", "budget_row"]


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


def check_sparsity(sparsity: float, count: str) -> None:
    """Refuse a sparsity outside (0, 1) or a ``count`` that is not one of :data:`COUNTS`, saying what to pass."""
    if not 0 < sparsity < 1:
        raise ValueError(f"sparsity={sparsity!r} must be a fraction strictly between 0 and 1, e.g. 0.25")
    if count not in COUNTS:
        raise ValueError(f"count={count!r} is not one of {', '.join(map(repr, COUNTS))}: say whether the "
                         "sparsity is a fraction of all parameters ('total') or of the decoder layers' ('layers')")


def counted_parameters(budget: ParameterBudget, count: str) -> int:
    """The parameter count a sparsity is a fraction of."""
    return budget.total if count == "total" else budget.layers


def layers_for_sparsity(model: nn.Module, sparsity: float, count: str = "total", added_parameters: int = 0) -> int:
    """How many consecutive decoder layers to take out to remove a ``sparsity`` fraction of parameters.

    ``count="total"`` counts every parameter, as the paper does (Llama2-7B, 32 layers,
    25% -> 8 layers); ``count="layers"`` counts only the decoder layers' parameters, so
    that 25% means a quarter of the layers. ``added_parameters`` is the size of what
    goes in the block's place (:func:`streamline_lib.methods.replacement.replacement_parameters`;
    0 for plain removal), so that the *net* removal meets the target: a decoder-layer
    replacement then takes out ``n + 1`` layers where plain removal takes out ``n``, as
    the authors' code does (it compares ``h_j`` with ``h_{j+n+1}`` and puts one layer in
    place of ``n + 1``), and the two remove the same number of parameters. The result is
    ``(sparsity * counted + added_parameters) / layer``, with ``layer`` the mean parameter
    count of one decoder layer (all layers have the same size in the supported
    architectures), rounded to the nearest integer (halves round up) and at least 1.

    Raises ``ValueError`` if ``sparsity`` is not in (0, 1), ``added_parameters`` is negative,
    or the result would remove every layer.
    """
    check_sparsity(sparsity, count)
    if added_parameters < 0:
        raise ValueError(f"added_parameters={added_parameters} must be >= 0: the size of the replacement")
    budget = parameter_budget(model)
    num_layers = len(budget.per_layer)
    per_layer = budget.layers / num_layers
    counted = counted_parameters(budget, count)
    n = max(1, math.floor((sparsity * counted + added_parameters) / per_layer + 0.5))
    if n >= num_layers:
        raise ValueError(
            f"sparsity={sparsity} of the {count} parameters ({counted:,}) means taking out "
            f"{n} layers of {per_layer:,.0f} parameters each, but the model has {num_layers} layers and at least "
            f"one must remain; choose a sparsity below "
            f"{((num_layers - 0.5) * per_layer - added_parameters) / counted:.3f}"
        )
    return n


@dataclass(frozen=True)
class SparsityReport:
    """What removing ``n`` decoder layers (and adding a replacement) does to the parameter count."""

    n: int  # decoder layers removed
    num_layers: int  # decoder layers of the dense model
    removed_parameters: int  # parameters of the n layers minus those of the replacement
    total_fraction: float  # removed_parameters / all parameters of the dense model
    layer_fraction: float  # removed_parameters / decoder-layer parameters of the dense model


def sparsity_report(model: nn.Module, n: int, added_parameters: int = 0) -> SparsityReport:
    """The actual sparsity of removing ``n`` layers from ``model``, counted both ways.

    ``added_parameters`` is the size of the replacement put in their place (0 for plain
    removal), so that e.g. a decoder-layer replacement, which brings one layer back, is
    counted. Layers are taken at their mean size, as in :func:`layers_for_sparsity`.
    """
    budget = parameter_budget(model)
    num_layers = len(budget.per_layer)
    if not 1 <= n <= num_layers:
        raise ValueError(
            f"n={n} layers cannot be removed from a model with {num_layers} layers; use 1 <= n <= {num_layers}"
        )
    removed = round(n * budget.layers / num_layers) - added_parameters
    return SparsityReport(n, num_layers, removed, removed / budget.total, removed / budget.layers)


BUDGET_FORMATS: dict[str, str] = {"replacement parameters": "{:,}", "removed, share of all parameters": "{:.1%}",
                                  "removed, share of layer parameters": "{:.1%}"}
"""How :func:`budget_row`'s numbers are shown (a pandas ``Styler.format`` argument)."""


def budget_row(model: nn.Module, start: int, n: int, added_parameters: int = 0) -> dict[str, str | int | float]:
    """One row of a budget table: the block taken out, what was put back, and the share removed both ways.

    Every chapter that compares pruned models at equal removed parameters shows this row for
    each, so a reader can check that the budgets match (a replacement takes out one layer
    more than plain removal to remove the same share). ``added_parameters`` is the
    replacement's size, as for :func:`sparsity_report`; show the rows with :data:`BUDGET_FORMATS`.
    """
    report = sparsity_report(model, n, added_parameters)
    return {"layers replaced": f"{start}..{start + n - 1} ({n})", "replacement parameters": added_parameters,
            "removed, share of all parameters": report.total_fraction,
            "removed, share of layer parameters": report.layer_fraction}
