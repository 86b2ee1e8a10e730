"""Perplexity agrees with a direct computation and does not depend on the batch size."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from streamline_lib.evaluation import perplexity


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config).eval()


def test_perplexity_matches_direct_computation(tiny_model):
    seqs = torch.randint(0, 50, (5, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = tiny_model(seqs).logits
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    nll = -logprobs.gather(-1, seqs[:, 1:, None]).mean().item()
    assert perplexity(tiny_model, seqs, batch_size=2, progress=False) == pytest.approx(math.exp(nll), rel=1e-5)
    assert perplexity(tiny_model, seqs, batch_size=5, progress=False) == pytest.approx(math.exp(nll), rel=1e-5)


def test_perplexity_rejects_bad_shapes(tiny_model):
    with pytest.raises(ValueError, match="seq_len >= 2"):
        perplexity(tiny_model, torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="num_seqs, seq_len"):
        perplexity(tiny_model, torch.zeros(8, dtype=torch.long))
