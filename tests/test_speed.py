"""Speed measurements return sane rates and decode exactly what greedy generation does."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from streamline_lib.evaluation import speed


def tiny() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config).eval()


def test_prefill_rate_is_positive_and_finite():
    rate = speed.prefill_tokens_per_second(tiny(), torch.randint(0, 64, (4, 16)), batch_size=2, repeats=2)
    assert 0 < rate < float("inf")


def test_decode_runs_the_forward_passes_of_generate(monkeypatch):
    model = tiny()
    prompts = torch.randint(0, 64, (2, 5))
    calls = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: calls.append(k["input_ids"].shape) or original(*a, **k))
    rate = speed.decode_tokens_per_second(model, prompts, new_tokens=7, warmup=0, repeats=1)
    assert 0 < rate < float("inf")
    # one prefill of the whole prompt, then one single-token step per new token
    assert calls == [(2, 5)] + [(2, 1)] * 7


def test_decoded_tokens_are_greedy_generation():
    model = tiny()
    prompts = torch.randint(0, 64, (1, 5))
    seen = []
    original = model.forward
    model.forward = lambda *a, **k: seen.append(k["input_ids"]) or original(*a, **k)
    speed.decode_tokens_per_second(model, prompts, new_tokens=6, warmup=0, repeats=1)
    del model.forward
    expected = model.generate(prompts, max_new_tokens=7, do_sample=False, min_new_tokens=7)[0, 5:]
    # each of the 6 timed steps feeds back the previous greedy token (the prefill chose the first)
    assert torch.cat([t[0] for t in seen[1:]]).tolist() == expected[:6].tolist()


def test_interleaved_rounds_time_every_model_once_per_round(monkeypatch):
    order = []
    real = speed.decode_tokens_per_second
    monkeypatch.setattr(speed, "decode_tokens_per_second",
                        lambda model, *a, **k: order.append((model.name, k["warmup"])) or real(model, *a, **k))
    models = {}
    for name in ("a", "b"):
        models[name] = tiny()
        models[name].name = name
    rounds = speed.compare_decode_speed(models, torch.randint(0, 64, (1, 5)), new_tokens=3, rounds=3)
    # one warm-up each, then rounds that alternate the models
    assert order == [("a", 1), ("b", 1)] + [("a", 0), ("b", 0)] * 3
    assert all(len(v) == 3 and min(v) > 0 for v in rounds.tokens_per_second.values())
    ratios = rounds.ratios("b", "a")
    interval = rounds.ratio_interval("b", "a")
    assert interval.low <= ratios.mean() == interval.estimate <= interval.high


def test_speed_rounds_give_the_paired_ratio():
    rounds = speed.SpeedRounds({"dense": [100.0, 50.0, 80.0], "pruned": [150.0, 75.0, 120.0]})
    assert rounds.ratios("pruned", "dense").tolist() == [1.5, 1.5, 1.5]  # a slow round slows both alike
    interval = rounds.ratio_interval("pruned", "dense")
    assert interval.low == interval.high == 1.5


def test_prefill_rounds_are_interleaved_after_one_warm_up_each(monkeypatch):
    order = []
    real = speed.prefill_tokens_per_second
    monkeypatch.setattr(speed, "prefill_tokens_per_second",
                        lambda model, *a, **k: order.append((model.name, k["warmup"] > 0, k["repeats"]))
                        or real(model, *a, **k))
    models = {}
    for name in ("dense", "pruned"):
        models[name] = tiny()
        models[name].name = name
    rounds = speed.compare_prefill_speed(models, torch.randint(0, 64, (4, 8)), batch_size=2, rounds=3)
    # a warm-up pass each (timed too, not kept), then rounds that alternate the models, one timed pass each
    assert order == [("dense", True, 1), ("pruned", True, 1)] + [("dense", False, 1), ("pruned", False, 1)] * 3
    assert all(len(v) == 3 and min(v) > 0 for v in rounds.tokens_per_second.values())
    assert rounds.threads == torch.get_num_threads() and rounds.cores == os.cpu_count()
    assert rounds.load_average is None or rounds.contended == (rounds.load_average > rounds.cores)
    with pytest.raises(ValueError, match="at least 2 rounds"):
        speed.compare_prefill_speed(models, torch.randint(0, 64, (2, 8)), rounds=1)


def test_rounds_say_when_other_work_shared_the_cores():
    tokens = {"dense": [1.0, 2.0]}
    assert speed.SpeedRounds(tokens, threads=2, load_average=3.5, cores=2).contended is True
    assert speed.SpeedRounds(tokens, threads=2, load_average=1.2, cores=2).contended is False
    assert speed.SpeedRounds(tokens).contended is None  # recorded before the machine's load was kept


def test_cpu_clock_times_this_process_and_is_recorded(monkeypatch):
    """clock='cpu' reads time.process_time (other processes do not lengthen it), and the rounds say so."""
    model = tiny()
    ticks = iter(range(0, 1000, 2))  # a fake CPU clock: every timed pass takes 2 "seconds"
    monkeypatch.setattr(speed.time, "process_time", lambda: float(next(ticks)))
    assert speed.prefill_tokens_per_second(model, torch.randint(0, 64, (4, 8)), batch_size=2, repeats=2,
                                           clock="cpu") == 4 * 8 / 2
    assert speed.decode_tokens_per_second(model, torch.randint(0, 64, (1, 5)), new_tokens=3, warmup=0, repeats=1,
                                          clock="cpu") == 3 / 2
    rounds = speed.compare_prefill_speed({"a": model}, torch.randint(0, 64, (2, 8)), rounds=2, clock="cpu")
    assert rounds.clock == "cpu" and rounds.tokens_per_second["a"] == [8.0, 8.0]
    assert speed.compare_decode_speed({"a": model}, torch.randint(0, 64, (1, 5)), new_tokens=2, rounds=2).clock \
        == "wall"


def test_unknown_clock_is_refused():
    with pytest.raises(ValueError, match="clock='gpu': choose one of 'wall', 'cpu'"):
        speed.prefill_tokens_per_second(tiny(), torch.randint(0, 64, (2, 8)), clock="gpu")
    with pytest.raises(ValueError, match="clock='thread'"):
        speed.compare_decode_speed({"a": tiny()}, torch.randint(0, 64, (1, 5)), rounds=2, clock="thread")
