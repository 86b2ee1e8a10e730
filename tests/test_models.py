"""Loading models: registry names, dtypes, errors, and the real bundled models."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from tokenizers import Tokenizer, models, pre_tokenizers

from streamline_lib.evaluation import perplexity
from streamline_lib.models import MODELS, bundled_model_dir, load_model, resolve_dtype
from streamline_lib.text_data import token_sequences


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


def test_local_folder_goes_to_transformers(tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    vocab = {f"t{i}": i for i in range(64)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="t1").save_pretrained(tmp_path)
    model, tokenizer = load_model(str(tmp_path), dtype="float32")
    assert model.config.num_hidden_layers == 2
    assert not model.training
    assert tokenizer.pad_token == "t1", "a missing pad token falls back to EOS for batching"


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
