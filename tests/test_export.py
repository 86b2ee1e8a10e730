"""Export round trips: a saved pruned model gives the logits of the in-memory one."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import pruned_for_export, tiny_of, trained_looking
from transformers import AutoModelForCausalLM

from streamline_lib.architecture.layers import get_layers
from streamline_lib.export import METADATA_FILE, load_pruned, read_metadata, record_evaluation, save_pruned
from streamline_lib.methods.pruning import prune_layers
from streamline_lib.methods.replacement import PlainFFN, ResidualFFN
from streamline_lib.models import load_model


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


IDS = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("replacement,storage", [("none", "transformers"), ("layer", "transformers"),
                                                 ("linear", "transformers"), ("ffn", "transformers-zero-attention")])
def test_plain_transformers_loads_the_export(tiny, tmp_path, replacement, storage):
    model, tokenizer = tiny
    result = pruned_for_export(model, replacement)
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


@pytest.mark.parametrize("replacement", ["ffn", "ffn_relu", "ffn_authors"])
def test_load_pruned_restores_the_fast_ffn(tiny, tmp_path, replacement):
    model, tokenizer = tiny
    result = pruned_for_export(model, replacement)
    save_pruned(result, tokenizer, tmp_path / "out", source_model="tiny")
    assert read_metadata(tmp_path / "out")["storage"] == ("streamline-ffn" if replacement == "ffn_authors"
                                                          else "transformers-zero-attention" if replacement == "ffn"
                                                          else "streamline-ffn")
    reloaded = load_pruned(tmp_path / "out")
    assert isinstance(get_layers(reloaded)[2], PlainFFN if replacement == "ffn_authors" else ResidualFFN)
    torch.testing.assert_close(_logits(reloaded, IDS), _logits(result.model, IDS))
    via_load_model, _ = load_model(str(tmp_path / "out"), dtype="float32")
    torch.testing.assert_close(_logits(via_load_model, IDS), _logits(result.model, IDS))


def test_custom_ffn_is_refused_by_plain_transformers(tiny, tmp_path):
    model, tokenizer = tiny
    save_pruned(pruned_for_export(model, "ffn_relu"), tokenizer, tmp_path / "out", source_model="tiny")
    assert read_metadata(tmp_path / "out")["storage"] == "streamline-ffn"
    with pytest.raises(OSError):
        AutoModelForCausalLM.from_pretrained(tmp_path / "out")


def _greedy(model, ids):
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                              pad_token_id=0)


PLAIN_FFNS = [("mistral", "ffn"), ("qwen2", "ffn"), ("phi3", "ffn"), ("opt", "ffn_relu")]


@pytest.mark.parametrize("model_type,kind", PLAIN_FFNS)
def test_ffns_that_are_a_zero_attention_layer_load_with_plain_transformers(tmp_path, model_type, kind):
    model, tokenizer = tiny_of(model_type)
    result = trained_looking(model, kind)
    save_pruned(result, tokenizer, tmp_path / "out", source_model="tiny")
    meta = read_metadata(tmp_path / "out")
    assert meta["storage"] == "transformers-zero-attention" and meta["loads_with"].startswith("transformers")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = IDS + 3
    torch.testing.assert_close(_logits(plain, ids), _logits(result.model, ids))
    assert torch.equal(_greedy(plain, ids), _greedy(result.model, ids))
    fast = load_pruned(tmp_path / "out")
    assert isinstance(get_layers(fast)[2], ResidualFFN)
    torch.testing.assert_close(_logits(fast, ids), _logits(result.model, ids))


@pytest.mark.parametrize("model_type,kind", [("gemma3_text", "ffn"), ("gpt2", "ffn"), ("gpt_neox", "ffn"),
                                             ("opt", "ffn"), ("llama", "ffn_relu"), ("gemma3_text", "ffn_relu")])
def test_ffns_no_layer_computes_say_what_loads_them(tmp_path, model_type, kind):
    model, tokenizer = tiny_of(model_type)
    result = trained_looking(model, kind)
    save_pruned(result, tokenizer, tmp_path / "out", source_model="tiny")
    meta = read_metadata(tmp_path / "out")
    assert meta["storage"] == "streamline-ffn"
    assert "load_model(path)" in meta["loads_with"] and model_type in meta["loads_with"]
    reloaded, _ = load_model(str(tmp_path / "out"), dtype="float32")
    ids = IDS + 3
    torch.testing.assert_close(_logits(reloaded, ids), _logits(result.model, ids))
    assert torch.equal(_greedy(reloaded, ids), _greedy(result.model, ids))


def test_existing_folder_is_not_overwritten(tiny, tmp_path):
    model, tokenizer = tiny
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_pruned(pruned_for_export(model, "none"), tokenizer, out, source_model="tiny")
    with pytest.raises(FileExistsError, match="not an export"):  # overwrite replaces only an earlier export
        save_pruned(pruned_for_export(model, "none"), tokenizer, out, source_model="tiny", overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    save_pruned(pruned_for_export(model, "none"), tokenizer, out, source_model="tiny", overwrite=True, overwrite_non_export=True)
    assert not (out / "notes.txt").exists() and (out / METADATA_FILE).exists()


def test_the_model_card_says_what_streamline_json_says(tiny, tmp_path):
    model, tokenizer = tiny
    save_pruned(pruned_for_export(model, "ffn"), tokenizer, tmp_path / "out", source_model="smollm2-135m", metric="cosine")
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\nlicense: apache-2.0\n")
    assert "layers 2-4 (0-based, 3 consecutive layers)" in card and "SwiGLU" in card
    assert "AutoModelForCausalLM.from_pretrained" in card and "Not evaluated yet" in card
    evaluation = {"tasks": {"piqa": {"acc": 0.5, "items": 10}}, "average": {"acc": 0.5}, "items": 10,
                  "accuracy_interval": [0.2, 0.8], "perplexity": 12.345, "perplexity_tokens": 256, "dtype": "float32"}
    assert record_evaluation(tmp_path / "out", evaluation)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| piqa | 0.5000 | 10 |" in card and "12.35 (256 tokens)" in card and "Not evaluated" not in card
    assert read_metadata(tmp_path / "out")["evaluation"] == evaluation


def test_a_card_the_user_edited_is_kept(tiny, tmp_path):
    model, tokenizer = tiny
    save_pruned(pruned_for_export(model, "none"), tokenizer, tmp_path / "out", source_model="tiny")
    card = tmp_path / "out" / "README.md"
    card.write_text(card.read_text() + "\nMy notes.\n")
    evaluation = {"tasks": {}, "average": {"acc": 0.5}, "items": 0, "accuracy_interval": [0.4, 0.6],
                  "perplexity": 2.0, "perplexity_tokens": 1, "dtype": "float32"}
    assert not record_evaluation(tmp_path / "out", evaluation)
    assert card.read_text().endswith("My notes.\n")
    assert read_metadata(tmp_path / "out")["evaluation"]["perplexity"] == 2.0
