"""Block scores against naive per-token loops, index conventions, and exact restoration."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from streamline_lib.architecture.hidden_states import iter_hidden_states
from streamline_lib.architecture.layers import get_layers
from streamline_lib.evaluation import perplexity
from streamline_lib.methods.scoring import (
    METRICS,
    BlockScores,
    block_influence,
    block_removed,
    block_scores,
    collect_stats,
    layers_removed,
    perplexity_scores,
    score_blocks,
    score_matrix,
    shortgpt_layers,
    sleb_layers,
)

LAYERS = 5
VOCAB = 64
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
             num_attention_heads=4, num_key_value_heads=2)
PAIR_METRICS = ("cosine", "angular", "euclidean", "dot")


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """A random tiny llama whose final norm has non-uniform weights, so that h_L after the
    final norm differs from the raw h_L in direction too, not only in scale."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**SMALL)).eval()
    with torch.no_grad():
        model.model.norm.weight.uniform_(0.2, 2.0)
    return model


def token_ids(num_seqs: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (num_seqs, seq_len), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


@pytest.fixture(scope="module")
def seqs():
    return token_ids(3, 6)


@pytest.fixture(scope="module")
def stats(model, seqs):
    return collect_stats(model, seqs, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def identity_model():
    """Layers 2 and 3 add zero to the residual stream, so h_2 = h_3 = h_4 exactly."""
    model = tiny_llama(seed=1)
    with torch.no_grad():
        for layer in get_layers(model)[2:4]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return model


def reference_states(model, seqs) -> list[torch.Tensor]:
    """h_0 … h_L in float64, independently of iter_hidden_states: transformers' hidden
    states, except the last, which it returns after the final norm; that one is hooked."""
    captured = []
    handle = get_layers(model)[-1].register_forward_hook(lambda module, args, out: captured.append(out))
    with torch.no_grad():
        hidden = model(seqs, output_hidden_states=True).hidden_states
    handle.remove()
    return [h.double() for h in (*hidden[:-1], captured[0])]


def naive_pair(states: list[torch.Tensor], metric: str, j: int, k: int) -> float:
    """Mean of ``metric`` between h_j and h_k with explicit loops over sequences and tokens."""
    values = []
    num_seqs, seq_len, _ = states[j].shape
    for s in range(num_seqs):
        for t in [seq_len - 1] if metric == "angular" else range(seq_len):
            x, y = states[j][s, t], states[k][s, t]
            cos = torch.dot(x, y) / (x.norm() * y.norm())
            values.append({
                "cosine": cos,
                "euclidean": (x - y).norm(),
                "dot": torch.dot(x, y),
                "angular": torch.arccos(cos.clamp(-1, 1)) / math.pi,
            }[metric])
    return float(sum(values) / len(values))


def naive_block(states: list[torch.Tensor], metric: str, start: int, n: int) -> float:
    if metric == "bi":
        return sum(1 - naive_pair(states, "cosine", i, i + 1) for i in range(start, start + n))
    return naive_pair(states, metric, start, start + n)


def assert_scores(result: BlockScores, expected: list[float], atol: float) -> None:
    actual = torch.tensor(result.scores, dtype=torch.float64)
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=atol)


@pytest.mark.parametrize("metric", [m for m in METRICS if m != "ppl"])
def test_every_block_matches_naive_loops(model, seqs, stats, metric):
    states = reference_states(model, seqs)
    for n in range(1, LAYERS):  # includes the last block, start + n = L, whose output is the raw h_L
        result = block_scores(stats, metric, n)
        assert (result.metric, result.n, len(result.scores)) == (metric, n, LAYERS - n + 1)
        expected = [naive_block(states, metric, start, n) for start in range(LAYERS - n + 1)]
        assert_scores(result, expected, atol=1e-5)


def test_norms_counts_and_pair_means(model, seqs, stats):
    states = reference_states(model, seqs)
    assert (stats.num_layers, stats.num_tokens, stats.num_sequences) == (LAYERS, 18, 3)
    expected = torch.stack([h.norm(dim=-1).mean() for h in states])
    torch.testing.assert_close(stats.mean_norms, expected, rtol=1e-5, atol=0)
    cosine = stats.pair_means("cosine")
    assert cosine.shape == (LAYERS + 1, LAYERS + 1)
    upper = torch.ones(LAYERS + 1, LAYERS + 1, dtype=torch.bool).triu(diagonal=1)
    assert cosine[~upper].isnan().all() and not cosine[upper].isnan().any()
    assert cosine[0, LAYERS] == pytest.approx(naive_pair(states, "cosine", 0, LAYERS), abs=1e-6)


def test_states_of_a_bfloat16_model_are_compared_in_float32(seqs):
    low = tiny_llama().to(torch.bfloat16)
    states = [h.double() for h in next(iter_hidden_states(low, seqs, batch_size=3, progress=False))]
    result = block_scores(collect_stats(low, seqs, progress=False), "dot", 2)
    expected = [naive_pair(states, "dot", start, start + 2) for start in range(LAYERS - 1)]
    assert_scores(result, expected, atol=1e-6)


def test_score_matrix_rows_are_block_lengths(stats):
    matrix = score_matrix(stats, "euclidean")
    assert matrix.shape == (LAYERS - 1, LAYERS)
    for n in range(1, LAYERS):
        row = matrix[n - 1]
        assert row[: LAYERS - n + 1].tolist() == list(block_scores(stats, "euclidean", n).scores)
        assert row[LAYERS - n + 1 :].isnan().all()


def test_shortgpt_removes_lowest_block_influence(stats):
    influence = block_influence(stats)
    assert influence.shape == (LAYERS,)
    chosen = shortgpt_layers(stats, 2)
    assert chosen == sorted(chosen) and len(chosen) == 2
    assert influence[chosen].max() <= min(influence[i] for i in range(LAYERS) if i not in chosen)


def test_identity_block_is_found_by_every_metric(identity_model):
    seqs = token_ids(3, 6, seed=2)
    for metric in ("cosine", "angular", "euclidean", "bi"):
        assert score_blocks(identity_model, seqs, 2, metric, progress=False).best_start == 2, metric
    stats = collect_stats(identity_model, seqs, progress=False)
    assert block_scores(stats, "cosine", 2).scores[2] == pytest.approx(1, abs=1e-6)
    assert block_scores(stats, "euclidean", 2).scores[2] == 0
    assert block_scores(stats, "angular", 2).scores[2] == pytest.approx(0, abs=1e-6)
    assert block_influence(stats)[2:4].tolist() == pytest.approx([0, 0], abs=1e-6)
    assert block_influence(stats)[[0, 1, 4]].min() > 1e-3
    assert shortgpt_layers(stats, 2) == [2, 3]
    dense = perplexity(identity_model, seqs, progress=False)
    ppl = perplexity_scores(identity_model, seqs, 2, progress=False)
    assert (ppl.metric, ppl.higher_is_better, len(ppl.scores)) == ("ppl", False, LAYERS - 1)
    assert ppl.scores[2] == pytest.approx(dense, rel=1e-6)
    assert all(score != pytest.approx(dense, rel=1e-4) for i, score in enumerate(ppl.scores) if i != 2)


def test_batch_size_invariance_and_determinism(model):
    seqs = token_ids(4, 5, seed=3)
    one, four = (collect_stats(model, seqs, batch_size=b, progress=False) for b in (1, 4))
    again = collect_stats(model, seqs, batch_size=4, progress=False)
    for name in ("cosine_sum", "distance_sum", "dot_sum", "last_angular_sum", "norm_sum"):
        torch.testing.assert_close(getattr(one, name), getattr(four, name), rtol=1e-5, atol=1e-5)
        assert torch.equal(getattr(four, name), getattr(again, name))
    assert (one.num_tokens, one.num_sequences) == (four.num_tokens, four.num_sequences) == (20, 4)


def test_best_start_ties_and_nan():
    assert BlockScores("cosine", 1, (0.5, 0.9, 0.9), True).best_start == 1
    assert BlockScores("euclidean", 1, (3.0, 1.0, 1.0), False).best_start == 1
    assert BlockScores("cosine", 1, (math.nan, 0.2, 0.1), True).best_start == 1
    with pytest.raises(ValueError, match="NaN"):
        BlockScores("ppl", 1, (math.nan, math.nan), False).best_start


def test_block_removed_restores_the_model_exactly():
    torch.manual_seed(0)
    # layer_types [F, F, S, S, S]: removing a block shifts layers onto positions of another type
    model = Qwen2ForCausalLM(Qwen2Config(**SMALL, use_sliding_window=True, sliding_window=3,
                                         max_window_layers=2)).eval()
    seqs = token_ids(2, 6)
    layers, types = get_layers(model), list(model.config.layer_types)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    indices = [layer.self_attn.layer_idx for layer in layers]
    with torch.no_grad():
        logits = model(seqs).logits
        with block_removed(model, 1, 3) as pruned:
            assert pruned is model and len(get_layers(model)) == model.config.num_hidden_layers == 2
            assert model.config.layer_types == ["full_attention", "sliding_attention"]
            assert not torch.equal(model(seqs).logits, logits)
        with pytest.raises(RuntimeError, match="inside"), block_removed(model, 0, 2):
            raise RuntimeError("inside")
        restored = model(seqs).logits
    assert get_layers(model) is layers and model.config.num_hidden_layers == LAYERS
    assert model.config.layer_types == types and model.model.has_sliding_layers
    assert [layer.self_attn.layer_idx for layer in layers] == indices
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(restored, logits)


def test_bad_block_length_and_metric(model, stats, seqs):
    for n in (0, LAYERS, -1):
        with pytest.raises(ValueError, match=rf"n={n} .* 1 <= n <= {LAYERS - 1}"):
            score_blocks(model, seqs, n, progress=False)
        with pytest.raises(ValueError, match=f"n={n}"):
            block_scores(stats, "cosine", n)
        with pytest.raises(ValueError, match=f"n={n}"):
            shortgpt_layers(stats, n)
    with pytest.raises(ValueError, match="'cos'.*cosine, angular, bi, euclidean, dot, ppl"):
        score_blocks(model, seqs, 2, metric="cos", progress=False)
    with pytest.raises(ValueError, match="'ppl'.*perplexity_scores"):
        block_scores(stats, "ppl", 2)
    with pytest.raises(ValueError, match=r"shape \(num_seqs"):
        collect_stats(model, seqs[0], progress=False)


def test_layers_removed_takes_any_set_and_restores_the_model():
    model = tiny_llama()
    seqs = token_ids(2, 6)
    with torch.no_grad():
        before = model(seqs).logits
        with layers_removed(model, [3, 0]):
            assert len(get_layers(model)) == model.config.num_hidden_layers == LAYERS - 2
            assert [layer.self_attn.layer_idx for layer in get_layers(model)] == [0, 1, 2]
        torch.testing.assert_close(model(seqs).logits, before, rtol=0, atol=0)
    assert [layer.self_attn.layer_idx for layer in get_layers(model)] == list(range(LAYERS))


def test_sleb_removes_greedily_by_calibration_perplexity(model, seqs, tmp_path, monkeypatch):
    result = sleb_layers(model, seqs, 3, batch_size=2, progress=False)
    # round 1 is the best single layer but the first and the last by the independent one-layer perplexity scores
    single = perplexity_scores(model, seqs, 1, batch_size=2, progress=False).scores
    assert result.layers[0] == min(range(1, LAYERS - 1), key=lambda i: (single[i], i))
    assert set(result.layers) == set(range(1, LAYERS - 1))  # n = L - 2: every layer but the first and the last
    assert len(set(result.layers)) == 3 and result.first(2) == sorted(result.layers[:2])
    for k in (1, 2, 3):  # each round's perplexity is that of the model without the first k layers
        with layers_removed(model, result.layers[:k]):
            assert result.perplexities[k - 1] == pytest.approx(perplexity(model, seqs, 2, progress=False))
    # and no other layer would have done better in round 2
    for other in set(range(1, LAYERS - 1)) - set(result.layers[:2]):
        with layers_removed(model, [result.layers[0], other]):
            assert perplexity(model, seqs, 2, progress=False) >= result.perplexities[1] - 1e-9
    assert sleb_layers(model, seqs, 3, batch_size=2, progress=False) == result  # deterministic
    cached = sleb_layers(model, seqs, 3, batch_size=2, progress=False, cache=tmp_path)
    monkeypatch.setattr("streamline_lib.methods.scoring.perplexity", lambda *a, **k: pytest.fail("recomputed"))
    assert sleb_layers(model, seqs, 3, batch_size=2, progress=False, cache=tmp_path) == cached == result
    with pytest.raises(ValueError, match="ask for 1 .. 3"):
        result.first(4)
    with pytest.raises(ValueError, match="never removes the first or the last layer.*remove 1 to 3"):
        sleb_layers(model, seqs, LAYERS - 1)


def test_sleb_never_removes_the_first_or_the_last_layer(model, seqs, monkeypatch):
    """As SLEB's reference implementation: even when removing them would cost nothing, they stay."""
    first, last = get_layers(model)[0], get_layers(model)[-1]

    def free_to_remove_the_ends(pruned, *args, **kwargs):  # perplexity 0 without the first or the last layer
        kept = list(get_layers(pruned))
        return 0.0 if first not in kept or last not in kept else 1.0

    monkeypatch.setattr("streamline_lib.methods.scoring.perplexity", free_to_remove_the_ends)
    assert set(sleb_layers(model, seqs, 2, progress=False).layers) <= set(range(1, LAYERS - 1))


@pytest.mark.parametrize("score", [
    lambda model, seqs: collect_stats(model, seqs, progress=False),
    lambda model, seqs: score_blocks(model, seqs, 2, "cosine", progress=False),
    lambda model, seqs: score_blocks(model, seqs, 2, "angular", progress=False),
    lambda model, seqs: score_blocks(model, seqs, 2, "ppl", progress=False),
    lambda model, seqs: sleb_layers(model, seqs, 1, progress=False),
], ids=["collect_stats", "cosine", "angular", "ppl", "sleb"])
def test_one_token_calibration_sequences_are_refused_by_every_metric(model, score):
    """A 1-token sequence predicts nothing and its one token attends only to itself: no metric can use it."""
    with pytest.raises(ValueError, match=r"calibration sequences of shape \(3, 1\) cannot be scored.*seq_len >= 2"):
        score(model, token_ids(3, 1))
