"""Loading models: registry names, dtypes, errors, and the real bundled models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from streamline_lib.core import files
from streamline_lib.core.cache_entry import manifest_path
from streamline_lib.data import assets
from streamline_lib.data.text_data import token_sequences
from streamline_lib.evaluation import perplexity
from streamline_lib.models import (
    MODELS,
    bundled_model_dir,
    check_device,
    check_model_source,
    load_model,
    resolve_dtype,
)
from streamline_lib.models import loading as streamline_models


def test_resolve_dtype_names_and_auto():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype(torch.float16) is torch.float16
    assert resolve_dtype("auto") in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        resolve_dtype("float8")


def test_unknown_model_name_lists_bundled_models():
    with pytest.raises(ValueError) as err:
        load_model("smollm-135m")
    assert "unknown model 'smollm-135m'" in str(err.value)
    for name in MODELS:
        assert name in str(err.value)


def save_tiny_model(folder) -> None:
    """A random 2-layer llama and a word-level tokenizer without a pad token, saved in ``folder``."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    vocab = {f"t{i}": i for i in range(64)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="t1").save_pretrained(folder)


def test_local_folder_goes_to_transformers(tmp_path):
    save_tiny_model(tmp_path)
    model, tokenizer = load_model(str(tmp_path), dtype="float32")
    assert model.config.num_hidden_layers == 2
    assert not model.training
    assert tokenizer.pad_token == "t1", "a missing pad token falls back to EOS for batching"


def test_config_asking_for_more_layers_than_the_weights_hold_is_refused_before_building(tmp_path):
    save_tiny_model(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2_000_000}))
    with pytest.raises(ValueError, match=r"asks for num_hidden_layers=2,000,000 but the weights hold 2 layers"):
        load_model(str(tmp_path), dtype="float32")


@pytest.mark.parametrize("path", ["./nope", "a/b/c", "~/nope", "ABSOLUTE"])
def test_a_missing_local_path_is_no_such_folder_not_a_hub_id(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    path = str(tmp_path / "nope") if path == "ABSOLUTE" else path
    with pytest.raises(FileNotFoundError, match=rf"no such folder: '{path}'"):
        load_model(path)


def test_a_bare_org_name_stays_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_model_source("HuggingFaceTB/SmolLM2-135M")  # nothing local by that name: left to the hub


def test_a_folder_without_config_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match=r"is not a model folder: it is a folder without a config.json"):
        load_model(str(tmp_path))


def test_a_truncated_weights_file_is_named(tmp_path):
    save_tiny_model(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"cannot read the weights file {weights} .*truncated or damaged"):
        load_model(str(tmp_path), dtype="float32")


@pytest.mark.parametrize("device, message", [
    ("tpu", "unknown device 'tpu'"),
    ("cuda", "device 'cuda' is not available"),
    ("cuda:7", "device 'cuda:7' is not available"),
])
def test_an_unusable_device_is_refused_before_loading(device, message):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match=message):
        load_model("no-such-model", device=device)  # the device is refused before the name is looked at


def test_a_gpu_index_past_the_gpus_there_are_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    with pytest.raises(ValueError, match=r"device 'cuda:7' does not exist: this machine has 2 cuda device\(s\)"):
        check_device("cuda:7")


def test_a_bundled_name_that_is_also_a_model_folder_here_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_tiny_model(tmp_path / "smollm2-135m")
    with pytest.raises(ValueError, match=r"'smollm2-135m' is both a bundled model and the model folder .* './smollm2"):
        load_model("smollm2-135m")
    assert load_model("./smollm2-135m", dtype="float32")[0].config.num_hidden_layers == 2


def test_a_folder_that_is_no_model_does_not_shadow_a_bundled_name(tmp_path, monkeypatch):
    """As notebooks/gemma3-270m, the executed chapters of the second model, next to the chapters run on it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gemma3-270m").mkdir()
    check_model_source("gemma3-270m")


@pytest.mark.integration
def test_smollm2_is_real(smollm2):
    model, tokenizer = smollm2
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 30
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert (bundled_model_dir("smollm2-135m") / "model.safetensors").exists()


@pytest.mark.integration
def test_smollm2_perplexity_on_heldout_wikipedia_is_sensible(smollm2):
    model, tokenizer = smollm2
    heldout = token_sequences(tokenizer, "wiki", "heldout", num_seqs=8, seq_len=256, seed=0)
    ppl = perplexity(model, heldout, progress=False)
    # A 135M model on Wikipedia: well above 1, far below a uniform guess over 49k tokens.
    assert 5 < ppl < 60, ppl


@pytest.mark.integration
def test_smollm2_answers_an_easy_question(smollm2):
    model, tokenizer = smollm2
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.integration
def test_bfloat16_agrees_with_float32(smollm2):
    model32, tokenizer = smollm2
    model16, _ = load_model("smollm2-135m", dtype="bfloat16")
    heldout = token_sequences(tokenizer, "wiki", "heldout", num_seqs=4, seq_len=256, seed=1)
    ppl32 = perplexity(model32, heldout, progress=False)
    ppl16 = perplexity(model16, heldout, progress=False)
    assert abs(ppl16 / ppl32 - 1) < 0.05, (ppl32, ppl16)


@pytest.mark.integration
def test_gemma3_second_architecture_loads_and_generates():
    model, tokenizer = load_model("gemma3-270m", dtype="bfloat16")
    assert model.config.model_type == "gemma3_text"
    assert model.config.num_hidden_layers == 18 == len(model.config.layer_types)
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 5


@pytest.fixture
def copy_of_the_real_conversion(tmp_path, monkeypatch):
    """A temporary cache whose SmolLM2 "conversion" copies the user's converted checkpoint (only read)."""
    real = assets.cache_dir() / "models" / f"smollm2-135m-{MODELS['smollm2-135m'].gguf_sha256[:12]}"
    if not (real / "model.safetensors").exists():
        pytest.skip(f"no converted SmolLM2 in {real}: load_model('smollm2-135m') makes it")
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    conversions = []

    def convert(spec, checkpoint):
        conversions.append(spec.name)
        shutil.copytree(real, checkpoint, ignore=shutil.ignore_patterns(files.TEMPORARY_PREFIX + "*"))

    monkeypatch.setattr(streamline_models, "_convert_gguf", convert)
    return conversions


@pytest.mark.integration
def test_the_converted_checkpoint_is_verified_on_every_use(copy_of_the_real_conversion):
    conversions = copy_of_the_real_conversion
    folder = bundled_model_dir("smollm2-135m")
    recorded = json.loads(manifest_path(folder).read_text())["files"]
    assert recorded["model.safetensors"] == files.file_digest(folder / "model.safetensors")
    assert {"config.json", "tokenizer.json"} <= set(recorded)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bundled_model_dir("smollm2-135m") == folder
    assert conversions == ["smollm2-135m"]
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as out:  # a conversion killed while writing, or a disk error
        out.truncate(weights.stat().st_size - 4096)
    with pytest.warns(RuntimeWarning, match="model.safetensors has .* bytes, .* were written; "
                                            "converting it from the GGUF file again"):
        assert bundled_model_dir("smollm2-135m") == folder
    assert conversions == ["smollm2-135m"] * 2
    assert files.file_digest(weights) == recorded["model.safetensors"]


@pytest.mark.integration
def test_a_killed_conversion_s_temporary_goes_on_the_next_conversion(copy_of_the_real_conversion, tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    host, _ = files.this_writer()
    leftover = tmp_path / "cache" / "models" / f"{files.TEMPORARY_PREFIX}{host}-{process.pid}-0123456789ab-smollm2"
    (leftover / "gguf").mkdir(parents=True)
    (leftover / "gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"half")
    bundled_model_dir("smollm2-135m")
    assert not leftover.exists()
