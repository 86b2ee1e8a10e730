"""The parameter budget counts each tensor once and adds up."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from streamline_lib.methods.sparsity import (
    BUDGET_FORMATS,
    budget_row,
    layers_for_sparsity,
    parameter_budget,
    sparsity_report,
)


@pytest.mark.parametrize("tied", [True, False])
def test_budget_splits_parameters_exactly(tied):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    model = LlamaForCausalLM(config)
    budget = parameter_budget(model)
    assert budget.embedding == 100 * 32
    assert budget.lm_head == (0 if tied else 100 * 32)
    # one layer: q, o (32x32), k, v (32x16), gate, up, down (32x64), two RMSNorms (32)
    per_layer = 2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64 + 2 * 32
    assert budget.per_layer == (per_layer,) * 3
    assert budget.other == 32  # the final norm
    assert budget.total == sum(p.numel() for p in model.parameters())
    assert budget.total == budget.embedding + budget.lm_head + budget.layers + budget.other
    assert budget.embedding_fraction == pytest.approx((budget.embedding + budget.lm_head) / budget.total)


def eight_layer_llama() -> LlamaForCausalLM:
    """Tied embedding 1000 x 32 = 32,000; 8 layers of 9,280; final norm 32; total 106,272."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=8,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


@pytest.mark.parametrize(
    ("sparsity", "count", "expected"),
    [
        (0.25, "total", 3),  # 0.25 * 106,272 / 9,280 = 2.86
        (0.25, "layers", 2),  # 0.25 * 8 = 2
        (0.3125, "layers", 3),  # 2.5: halves round up
        (0.01, "layers", 1),  # 0.08: at least one layer
        (0.6, "total", 7),  # 6.87: all but one layer
    ],
)
def test_layers_for_sparsity_by_hand(sparsity, count, expected):
    model = eight_layer_llama()
    assert parameter_budget(model).total == 106_272
    assert layers_for_sparsity(model, sparsity, count) == expected


@pytest.mark.parametrize("sparsity", [0.0, 1.0, -0.1, 1.5])
def test_sparsity_outside_zero_one_is_refused(sparsity):
    with pytest.raises(ValueError, match=f"sparsity={sparsity!r} must be a fraction strictly between 0 and 1"):
        layers_for_sparsity(eight_layer_llama(), sparsity)


def test_sparsity_that_removes_every_layer_is_refused():
    with pytest.raises(ValueError, match="sparsity=0.95 of the layers parameters .* means taking out 8 layers .* "
                                         "the model has 8 layers .* choose a sparsity below 0.938"):
        layers_for_sparsity(eight_layer_llama(), 0.95, "layers")
    with pytest.raises(ValueError, match="count='all' is not one of 'total', 'layers'"):
        layers_for_sparsity(eight_layer_llama(), 0.25, "all")


def test_sparsity_report_counts_both_ways_and_the_replacement():
    model = eight_layer_llama()
    report = sparsity_report(model, 3)
    assert (report.n, report.num_layers, report.removed_parameters) == (3, 8, 3 * 9_280)
    assert report.total_fraction == pytest.approx(27_840 / 106_272)
    assert report.layer_fraction == pytest.approx(3 / 8)
    with_layer = sparsity_report(model, 3, added_parameters=9_280)  # a decoder-layer replacement
    assert with_layer.removed_parameters == 2 * 9_280 and with_layer.layer_fraction == pytest.approx(2 / 8)
    with pytest.raises(ValueError, match="n=9 layers cannot be removed from a model with 8 layers"):
        sparsity_report(model, 9)


def test_budget_row_names_the_block_and_the_share_removed_both_ways():
    model = eight_layer_llama()
    row = budget_row(model, 2, 3, added_parameters=9_280)
    assert row == {"layers replaced": "2..4 (3)", "replacement parameters": 9_280,
                   "removed, share of all parameters": pytest.approx(2 * 9_280 / 106_272),
                   "removed, share of layer parameters": pytest.approx(2 / 8)}
    assert set(BUDGET_FORMATS) == set(row) - {"layers replaced"}
    with pytest.raises(ValueError, match="n=9 layers cannot be removed"):
        budget_row(model, 0, 9)


def test_a_layer_replacement_takes_out_one_more_layer_for_the_same_net_removal():
    """The authors' convention: one new layer in place of n + 1 removes n layers' worth, as removal of n does."""
    model = eight_layer_llama()
    n = layers_for_sparsity(model, 0.25, "layers")
    with_layer = layers_for_sparsity(model, 0.25, "layers", added_parameters=9_280)
    assert (n, with_layer) == (2, 3)
    assert sparsity_report(model, with_layer, 9_280).removed_parameters == sparsity_report(model, n).removed_parameters
    assert layers_for_sparsity(model, 0.25, "layers", added_parameters=0.4 * 9_280) == 2  # 2.4 rounds down
    with pytest.raises(ValueError, match="added_parameters=-1 must be >= 0"):
        layers_for_sparsity(model, 0.25, added_parameters=-1)
    with pytest.raises(ValueError, match="choose a sparsity below 0.812"):
        layers_for_sparsity(model, 0.85, "layers", added_parameters=9_280)
