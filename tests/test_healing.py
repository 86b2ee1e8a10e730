"""LoRA healing: it lowers the pruned model's loss, returns a plain model, is deterministic and cached."""

from __future__ import annotations

import pytest
import torch
from helpers import FAST, assert_same_training, counting_tokens, positional_and_keyword, tiny_llama
from transformers import LlamaForCausalLM

from streamline_lib.architecture.layers import num_layers, remove_layers
from streamline_lib.core.results_cache import model_fingerprint
from streamline_lib.methods.healing import HealResult, LoraSettings, heal_with_lora
from streamline_lib.methods.training import TrainConfig

LM = TrainConfig(**{**FAST, "loss": "lm"})


@pytest.fixture(scope="module")
def pruned() -> LlamaForCausalLM:
    return remove_layers(tiny_llama(), 2, 3)


def test_healing_lowers_the_loss_and_merges_into_a_plain_model(pruned):
    before = model_fingerprint(pruned)
    result = heal_with_lora(pruned, counting_tokens(), config=LM)
    assert isinstance(result, HealResult)
    assert model_fingerprint(pruned) == before  # the input model is not changed
    t = result.train_result
    assert t.loss == "lm" and t.val_losses[0] == pytest.approx(t.baseline_val_loss)  # B = 0: starts as pruned
    assert t.best_val_loss < 0.9 * t.baseline_val_loss
    healed = result.model
    assert type(healed) is LlamaForCausalLM and num_layers(healed) == num_layers(pruned)
    assert not any("lora" in name for name, _ in healed.named_parameters())  # merged, no adapters left
    assert all(p.requires_grad for p in healed.parameters())
    assert all(p.requires_grad for p in pruned.parameters())
    # rank 8 on every linear of the 3 remaining layers (q, k, v, o, gate, up, down): r * (in + out) each
    h, i, kv = 32, 64, 16
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]
    assert result.lora_parameters == 3 * sum(8 * (a + b) for a, b in shapes)
    batch = counting_tokens()[:4]
    with torch.no_grad():
        assert healed(input_ids=batch, labels=batch).loss < pruned(input_ids=batch, labels=batch).loss


def test_healing_is_deterministic_and_cached(pruned, tmp_path):
    first = heal_with_lora(pruned, counting_tokens(), config=LM, cache=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    again = heal_with_lora(pruned, counting_tokens(), config=LM, cache=tmp_path)  # from the cache
    fresh = heal_with_lora(pruned, counting_tokens(), config=LM)  # trained again
    assert again.train_result == first.train_result
    assert model_fingerprint(again.model) == model_fingerprint(first.model) == model_fingerprint(fresh.model)
    heal_with_lora(pruned, counting_tokens(), config=LM, lora=LoraSettings(rank=2), cache=tmp_path)  # another setting
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_healing_errors_name_the_fix(pruned):
    with pytest.raises(ValueError, match=r"next-token loss, but config.loss='mse': pass TrainConfig\(loss='lm'"):
        heal_with_lora(pruned, counting_tokens(), config=TrainConfig(**FAST))
    with pytest.raises(ValueError, match="LoraSettings.rank=0 is invalid: it must be a positive integer"):
        LoraSettings(rank=0)
    with pytest.raises(ValueError, match="LoraSettings.alpha=0 is invalid"):
        LoraSettings(alpha=0)


def test_config_and_lora_still_work_by_position_with_a_deprecation_warning(pruned):
    old, new = positional_and_keyword(heal_with_lora, (pruned, counting_tokens()),
                                      dict(config=LM, lora=LoraSettings(rank=2)))
    assert old.lora_parameters == new.lora_parameters
    assert_same_training(old.train_result, new.train_result)
    assert model_fingerprint(old.model) == model_fingerprint(new.model)
