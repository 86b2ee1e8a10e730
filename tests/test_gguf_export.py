"""GGUF export: the file gives the logits and the tokens of the export it was written from."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_of, trained_looking
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from streamline_lib.core.files import default_file_mode
from streamline_lib.export import read_metadata, save_pruned
from streamline_lib.export.gguf import export_gguf, gguf_logits
from streamline_lib.methods.pruning import prune
from streamline_lib.models import bundled_model_dir

TEXT = "The capital of France is Paris, and the river that runs through it is the Seine."


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny llama with SmolLM2's tokenizer, a block removed, saved; with its tokenizer and in-memory model."""
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir("smollm2-135m"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=5,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2)
    result = prune(LlamaForCausalLM(config).eval(), 1, 2, replacement="none")
    folder = tmp_path_factory.mktemp("gguf") / "pruned"
    save_pruned(result, tokenizer, folder, source_model="smollm2-135m", metric="cosine")
    return folder, tokenizer, result.model


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.integration
def test_float32_gguf_gives_the_exports_logits_and_tokenizer(export):
    folder, tokenizer, model = export
    written = export_gguf(folder, dtype="f32")
    assert written.path == folder / "model-f32.gguf" and written.size_bytes == written.path.stat().st_size
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    torch.testing.assert_close(gguf_logits(written.path, ids), _logits(model, ids), rtol=1e-5, atol=1e-5)
    from_gguf = AutoTokenizer.from_pretrained(folder, gguf_file=written.path.name)
    assert from_gguf(TEXT).input_ids == tokenizer(TEXT).input_ids
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=written.path.name)
    assert loaded.config.num_hidden_layers == 3


@pytest.mark.integration
def test_float16_gguf_is_half_the_size_and_close(export):
    folder, tokenizer, model = export
    f16 = export_gguf(folder, out=folder.parent / "half.gguf", dtype="f16")
    f32 = folder / "model-f32.gguf"
    if not f32.exists():
        export_gguf(folder, dtype="f32")
    assert f16.size_bytes < 0.6 * f32.stat().st_size
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    expected = _logits(model, ids)
    got = gguf_logits(f16.path, ids)
    assert (got - expected).abs().max() < 1e-2 * expected.abs().max()
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


@pytest.mark.integration
def test_a_gguf_file_is_readable_like_the_rest_and_replaced_only_with_overwrite(export, tmp_path):
    folder, _, _ = export
    out = tmp_path / "model.gguf"
    written = export_gguf(folder, out=out, dtype="f32").path
    assert written.stat().st_mode & 0o777 == default_file_mode() == (folder / "config.json").stat().st_mode & 0o777
    first = written.read_bytes()
    with pytest.raises(FileExistsError, match="exists"):
        export_gguf(folder, out=out, dtype="f32")
    assert export_gguf(folder, out=out, dtype="f32", overwrite=True).path.read_bytes() == first  # deterministic
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".streamline-tmp-")]


@pytest.mark.integration
def test_an_existing_file_is_kept(export):
    folder, _, _ = export
    mine = folder / "mine.gguf"
    mine.write_text("my file")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_gguf(folder, out=mine)
    with pytest.raises(FileExistsError, match="not a GGUF file"):  # --force replaces only a GGUF file
        export_gguf(folder, out=mine, overwrite=True)
    assert mine.read_text() == "my file"
    with pytest.raises(ValueError, match="f16, f32"):
        export_gguf(folder, dtype="q4")


@pytest.mark.parametrize("model_type,kind,message", [("gemma3_text", "none", "llama architecture only"),
                                                     ("llama", "ffn_relu", "only plain-transformers exports")])
def test_what_gguf_cannot_hold_is_refused_with_the_reason(tmp_path, model_type, kind, message):
    model, tokenizer = tiny_of(model_type)
    save_pruned(trained_looking(model, kind) if kind != "none" else prune(model, 2, 3), tokenizer,
                tmp_path / "out", source_model="tiny")
    with pytest.raises(ValueError, match=message):
        export_gguf(tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.gguf")) and read_metadata(tmp_path / "out") is not None


@pytest.mark.integration
def test_llama_cpp_runs_the_file(export):
    """llama.cpp's own bindings, where they are installed (make bench-gguf installs them)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    folder, tokenizer, model = export
    path = folder / "model-f32.gguf"
    if not path.exists():
        export_gguf(folder, dtype="f32")
    ids = tokenizer(TEXT).input_ids
    llm = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False, seed=0)
    assert llm.tokenize(TEXT.encode(), add_bos=False, special=False) == ids
    llm.eval(ids)
    got = torch.tensor(llm.scores[: len(ids)])
    expected = _logits(model, torch.tensor([ids]))[0]
    assert (got - expected).abs().max() < 1e-3 * expected.abs().max()
