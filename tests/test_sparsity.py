"""The parameter budget counts each tensor once and adds up."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from streamline_lib.sparsity import parameter_budget


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
