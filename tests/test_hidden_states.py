"""Recorded hidden states are the layers' inputs and outputs, before the final norm."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from streamline_lib.architecture.hidden_states import iter_hidden_states


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config).eval()


def test_states_match_transformers_except_the_normed_last(tiny_llama):
    seqs = torch.randint(0, 64, (3, 7), generator=torch.Generator().manual_seed(0))
    states = next(iter_hidden_states(tiny_llama, seqs, batch_size=3, progress=False))
    with torch.no_grad():
        reference = tiny_llama(seqs, output_hidden_states=True).hidden_states
    assert len(states) == 5
    for i in range(4):
        torch.testing.assert_close(states[i], reference[i])
    # transformers' last entry is after the final norm; ours is the last layer's raw output
    torch.testing.assert_close(tiny_llama.model.norm(states[4]), reference[4])
    assert not torch.allclose(states[4], reference[4])


def test_batches_and_early_stop(tiny_llama):
    seqs = torch.randint(0, 64, (5, 6), generator=torch.Generator().manual_seed(1))
    full = list(iter_hidden_states(tiny_llama, seqs, batch_size=2, progress=False))
    assert [s[0].shape[0] for s in full] == [2, 2, 1]
    partial = list(iter_hidden_states(tiny_llama, seqs, batch_size=2, up_to=2, progress=False))
    assert all(len(p) == 3 for p in partial)
    for p, f in zip(partial, full):
        for a, b in zip(p, f[:3]):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="up_to=9"):
        next(iter_hidden_states(tiny_llama, seqs, up_to=9, progress=False))
