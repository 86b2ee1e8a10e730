"""Training costs: measured in a fresh process, the trained weights reach the cache, and bad input is refused."""

from __future__ import annotations

import pytest
import torch
from helpers import FAST, VOCAB, counting_tokens, tiny_llama, word_level_tokenizer

from streamline_lib.data.assets import CACHE_ENV
from streamline_lib.methods.costs import TrainingCost, sharp_cost, sleb_cost, training_cost
from streamline_lib.methods.healing import heal_with_lora
from streamline_lib.methods.pruning import prune
from streamline_lib.methods.scoring import sleb_layers
from streamline_lib.methods.sharing import sharp
from streamline_lib.methods.training import TrainConfig
from streamline_lib.models import load_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny llama saved with a word-level tokenizer, as load_model reads it: (folder, model)."""
    folder = tmp_path_factory.mktemp("tiny")
    tiny_llama().save_pretrained(folder)
    word_level_tokenizer(VOCAB, eos_token="t1").save_pretrained(folder)
    return str(folder), load_model(str(folder), dtype="float32")[0]


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(("method", "config", "in_folder"), [("ffn", TrainConfig(**FAST), False),
                                                             ("ffn", TrainConfig(**FAST), True),
                                                             ("lora", TrainConfig(**{**FAST, "loss": "lm"}), False)])
def test_cost_is_measured_and_the_model_comes_from_the_cache(saved, isolated_cache, method, config, in_folder):
    folder, dense = saved
    tokens = counting_tokens()
    cache = isolated_cache / "chosen" if in_folder else True  # a folder keeps the measurement and the weights there
    cost = training_cost(dense, folder, 2, 3, method, tokens, config, cache=cache)
    assert isinstance(cost, TrainingCost) and cost.method == method
    assert cost.seconds > 0 and 0 < cost.model_rss < cost.peak_rss  # the process held a model, then more
    assert cost.train_result.best_val_loss < cost.train_result.baseline_val_loss
    # the same training in this process finds the fresh process's weights and record in the cache
    if method == "lora":
        again = heal_with_lora(prune(dense, 2, 3, replacement="none").model, tokens, config=config, cache=cache)
    else:
        again = prune(dense, 2, 3, replacement=method, train_sequences=tokens, train_config=config, cache=cache)
    assert again.train_result == cost.train_result
    assert training_cost(dense, folder, 2, 3, method, tokens, config, cache=cache) == cost  # the measurement is cached
    if in_folder:
        assert not (isolated_cache / "results").exists() and not (isolated_cache / "pruned").exists()


def test_cost_of_the_linear_map_is_measured_and_cached(saved, isolated_cache):
    folder, dense = saved
    cost = training_cost(dense, folder, 2, 3, "linear", counting_tokens(), TrainConfig(**FAST), cache=True)
    assert cost.method == "linear" and cost.train_result is None  # fitted in closed form, nothing trained
    assert cost.seconds > 0 and 0 < cost.model_rss < cost.peak_rss
    assert training_cost(dense, folder, 2, 3, "linear", counting_tokens(), TrainConfig(**FAST), cache=True) == cost


def test_cost_refuses_bad_input(saved, isolated_cache):
    folder, dense = saved
    with pytest.raises(ValueError, match="unknown method 'none'; choose one of lora, ffn"):
        training_cost(dense, folder, 2, 3, "none", counting_tokens())
    with pytest.raises(ValueError, match=r"config.loss='mse': pass TrainConfig\(loss='lm'"):
        training_cost(dense, folder, 2, 3, "lora", counting_tokens(), TrainConfig(**FAST))
    other = tiny_llama()
    with torch.no_grad():
        other.lm_head.weight.add_(1.0)
    with pytest.raises(ValueError, match="gives other weights than the model passed as dense"):
        training_cost(other, folder, 2, 3, "ffn", counting_tokens(), TrainConfig(**FAST))


def test_sleb_choice_is_measured_and_then_read_from_the_cache(saved, isolated_cache, monkeypatch):
    folder, dense = saved
    tokens = counting_tokens(4, 8)
    cost = sleb_cost(dense, folder, tokens, 2, batch_size=2, cache=True)
    assert cost.method == "sleb" and cost.train_result is None and cost.seconds > 0
    monkeypatch.setattr("streamline_lib.methods.scoring.perplexity", lambda *a, **k: pytest.fail("chosen again"))
    chosen = sleb_layers(dense, tokens, 2, batch_size=2, cache=True)
    assert len(chosen.layers) == 2 and sleb_cost(dense, folder, tokens, 2, batch_size=2, cache=True) == cost


def test_sharp_recovery_is_measured_and_reaches_the_cache(saved, isolated_cache):
    folder, dense = saved
    tokens = counting_tokens()
    slw, sft = TrainConfig(**FAST), TrainConfig(**{**FAST, "loss": "lm"})
    cost = sharp_cost(dense, folder, [3, 5], 2, 4.0, tokens[:8], slw, tokens, sft, cache=True)
    assert cost.method == "sharp" and 0 < cost.model_rss < cost.peak_rss
    again = sharp(dense, [3, 5], rank=2, alpha=4.0, slw_sequences=tokens[:8], slw_config=slw, sft_sequences=tokens,
                  sft_config=sft, cache=True)
    assert again.sft_result == cost.train_result  # trained in the fresh process, read here
