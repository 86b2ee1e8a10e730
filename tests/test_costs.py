"""Training costs: measured in a fresh process, the trained weights reach the cache, and bad input is refused."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from streamline_lib.assets import CACHE_ENV
from streamline_lib.costs import TrainingCost, sharp_cost, sleb_cost, training_cost
from streamline_lib.healing import heal_with_lora
from streamline_lib.models import load_model
from streamline_lib.pruning import prune
from streamline_lib.scoring import sleb_layers
from streamline_lib.sharing import sharp
from streamline_lib.training import TrainConfig

from test_training import FAST, VOCAB, counting_tokens, tiny_llama


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny llama saved with a word-level tokenizer, as load_model reads it: (folder, model)."""
    folder = tmp_path_factory.mktemp("tiny")
    backend = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tiny_llama().save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="t1").save_pretrained(folder)
    return str(folder), load_model(str(folder), dtype="float32")[0]


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(("method", "config"), [("ffn", TrainConfig(**FAST)),
                                                ("lora", TrainConfig(**{**FAST, "loss": "lm"}))])
def test_cost_is_measured_and_the_model_comes_from_the_cache(saved, isolated_cache, method, config):
    folder, dense = saved
    tokens = counting_tokens()
    cost = training_cost(dense, folder, 2, 3, method, tokens, config)
    assert isinstance(cost, TrainingCost) and cost.method == method
    assert cost.seconds > 0 and 0 < cost.model_rss < cost.peak_rss  # the process held a model, then more
    assert cost.train_result.best_val_loss < cost.train_result.baseline_val_loss
    # the same training in this process finds the fresh process's weights and record in the cache
    if method == "lora":
        again = heal_with_lora(prune(dense, 2, 3, "none").model, tokens, config, cache=True)
    else:
        again = prune(dense, 2, 3, method, tokens, config, cache=True)
    assert again.train_result == cost.train_result
    assert training_cost(dense, folder, 2, 3, method, tokens, config) == cost  # the measurement is cached


def test_cost_of_the_linear_map_is_measured_and_cached(saved, isolated_cache):
    folder, dense = saved
    cost = training_cost(dense, folder, 2, 3, "linear", counting_tokens(), TrainConfig(**FAST))
    assert cost.method == "linear" and cost.train_result is None  # fitted in closed form, nothing trained
    assert cost.seconds > 0 and 0 < cost.model_rss < cost.peak_rss
    assert training_cost(dense, folder, 2, 3, "linear", counting_tokens(), TrainConfig(**FAST)) == cost


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
    cost = sleb_cost(dense, folder, tokens, 2, batch_size=2)
    assert cost.method == "sleb" and cost.train_result is None and cost.seconds > 0
    monkeypatch.setattr("streamline_lib.scoring.perplexity", lambda *a, **k: pytest.fail("chosen again"))
    chosen = sleb_layers(dense, tokens, 2, batch_size=2, cache=True)
    assert len(chosen.layers) == 2 and sleb_cost(dense, folder, tokens, 2, batch_size=2) == cost


def test_sharp_recovery_is_measured_and_reaches_the_cache(saved, isolated_cache):
    folder, dense = saved
    tokens = counting_tokens()
    slw, sft = TrainConfig(**FAST), TrainConfig(**{**FAST, "loss": "lm"})
    cost = sharp_cost(dense, folder, [3, 5], 2, 4.0, tokens[:8], slw, tokens, sft)
    assert cost.method == "sharp" and 0 < cost.model_rss < cost.peak_rss
    again = sharp(dense, [3, 5], 2, 4.0, tokens[:8], slw, tokens, sft, cache=True)
    assert again.sft_result == cost.train_result  # trained in the fresh process, read here
