"""Export round trips: a saved pruned model gives the logits of the in-memory one."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from tokenizers import Tokenizer, models, pre_tokenizers

from streamline_lib.export import METADATA_FILE, load_pruned, read_metadata, save_pruned
from streamline_lib.layers import get_layers
from streamline_lib.models import load_model
from streamline_lib.pruning import prune, prune_layers
from streamline_lib.replacement import ResidualFFN


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config).eval()
    backend = Tokenizer(models.WordLevel({f"t{i}": i for i in range(64)}, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return model, PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="t1")


def _pruned(model, replacement):
    # the linear map is fitted on a few token windows; without them it would be the identity (plain removal)
    tokens = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(2)) if replacement == "linear" \
        else None
    result = prune(model, 2, 3, replacement=replacement, train_sequences=tokens)
    module = get_layers(result.model)[2]
    if isinstance(module, ResidualFFN):
        # untrained FFNs may be exactly plain removal; give them weights that matter
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1 + (1 if p.ndim == 1 else 0))
    return result


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


IDS = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("replacement,storage", [("none", "transformers"), ("layer", "transformers"),
                                                 ("linear", "transformers"), ("ffn", "transformers-zero-attention")])
def test_plain_transformers_loads_the_export(tiny, tmp_path, replacement, storage):
    model, tokenizer = tiny
    result = _pruned(model, replacement)
    save_pruned(result, tokenizer, tmp_path / "out", source_model="tiny", metric="cosine")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(_logits(reloaded, IDS), _logits(result.model, IDS))
    meta = json.loads((tmp_path / "out" / METADATA_FILE).read_text())
    assert meta["storage"] == storage
    assert (meta["start"], meta["n"], meta["replacement"], meta["metric"]) == (2, 3, replacement, "cosine")
    assert meta["removed_layers"] == [2, 3, 4]
    assert meta["source_model"] == "tiny"
    assert (meta["linear_fit"] is not None) == (replacement == "linear")


def test_layers_that_are_not_neighbours_export_as_a_plain_model(tiny, tmp_path):
    model, tokenizer = tiny
    result = prune_layers(model, [1, 4])
    save_pruned(result, tokenizer, tmp_path / "out", source_model="tiny", metric="shortgpt")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(_logits(reloaded, IDS), _logits(result.model, IDS))
    meta = read_metadata(tmp_path / "out")
    assert (meta["removed_layers"], meta["start"], meta["n"], meta["metric"]) == ([1, 4], None, 2, "shortgpt")
    assert (meta["replacement"], meta["storage"], meta["training"]) == ("none", "transformers", None)


@pytest.mark.parametrize("replacement", ["ffn", "ffn_relu"])
def test_load_pruned_restores_the_fast_ffn(tiny, tmp_path, replacement):
    model, tokenizer = tiny
    result = _pruned(model, replacement)
    save_pruned(result, tokenizer, tmp_path / "out", source_model="tiny")
    reloaded = load_pruned(tmp_path / "out")
    assert isinstance(get_layers(reloaded)[2], ResidualFFN)
    torch.testing.assert_close(_logits(reloaded, IDS), _logits(result.model, IDS))
    via_load_model, _ = load_model(str(tmp_path / "out"), dtype="float32")
    torch.testing.assert_close(_logits(via_load_model, IDS), _logits(result.model, IDS))


def test_custom_ffn_is_refused_by_plain_transformers(tiny, tmp_path):
    model, tokenizer = tiny
    save_pruned(_pruned(model, "ffn_relu"), tokenizer, tmp_path / "out", source_model="tiny")
    assert read_metadata(tmp_path / "out")["storage"] == "streamline-ffn"
    with pytest.raises(OSError):
        AutoModelForCausalLM.from_pretrained(tmp_path / "out")


def test_existing_folder_is_not_overwritten(tiny, tmp_path):
    model, tokenizer = tiny
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_pruned(_pruned(model, "none"), tokenizer, out, source_model="tiny")
    assert (out / "notes.txt").read_text() == "mine"
    save_pruned(_pruned(model, "none"), tokenizer, out, source_model="tiny", overwrite=True)
    assert not (out / "notes.txt").exists() and (out / METADATA_FILE).exists()
