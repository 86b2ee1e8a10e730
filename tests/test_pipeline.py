"""One recipe, one call: recipe -> compress -> save -> reproduce, for every method the book has."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from streamline_lib import Recipe, compress, load_model, reproduce, save_pruned
from streamline_lib.cli import main
from streamline_lib.export.checkpoint import read_metadata
from streamline_lib.methods.sparsity import parameter_budget
from streamline_lib.methods.training import TrainConfig
from streamline_lib.models.loading import bundled_model_dir
from streamline_lib.pipeline.recipe import DataSpec, RecipeError

SMALL = {"calibration": DataSpec(num_seqs=2, seq_len=16),
         "train_data": DataSpec(split="train", num_seqs=8, seq_len=16),
         "training": TrainConfig(epochs=1, batch_size=4, eval_every=2),
         "healing": TrainConfig(loss="lm", epochs=1, batch_size=4, eval_every=2)}
RECIPES = {
    "block-none": Recipe(layers=2, **SMALL),
    "block-layer": Recipe(layers=2, replacement="layer", **SMALL),
    "block-ffn": Recipe(layers=2, replacement="ffn", **SMALL),
    "block-ffn_relu": Recipe(layers=2, replacement="ffn_relu", metric="dot", **SMALL),
    "block-ffn_authors": Recipe(layers=2, replacement="ffn_authors", metric="dot", **SMALL),
    "replaceme": Recipe(method="replaceme", layers=2, **SMALL),
    "shortgpt": Recipe(method="shortgpt", sparsity=0.3, sparsity_of="layers", **SMALL),
    "sleb": Recipe(method="sleb", layers=2, **SMALL),
    "sharp": Recipe(method="sharp", layers=2, warmup_seqs=4, **SMALL),
    "block-lora": Recipe(layers=2, heal="lora", **SMALL),
}


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A tiny llama with SmolLM2's tokenizer, saved as a folder and loaded from it like any user's model."""
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir("smollm2-135m"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("dense") / "tiny"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder), *load_model(str(folder), dtype="float32")


@pytest.mark.parametrize("name", RECIPES)
def test_every_method_round_trips_through_an_export_and_reproduces_bit_for_bit(dense, tmp_path, name):
    folder, model, tokenizer = dense
    recipe = RECIPES[name]
    result = compress(model, tokenizer, recipe, progress=False)
    assert result.source_model == folder and result.recipe == recipe
    out = save_pruned(result, tokenizer, tmp_path / name)  # the result carries everything save_pruned needs
    metadata = read_metadata(out)
    assert Recipe.from_dict(metadata["recipe"]) == recipe and metadata["source_dtype"] == "float32"
    assert set(metadata["versions"]) == {"streamline_lib", "torch", "transformers"}
    if recipe.method == "sharp":
        assert metadata["sharing"]["layers"] == [3, 5] and metadata["n"] == 0
    else:
        assert metadata["n"] == 2 and len(metadata["removed_layers"]) == 2
    again = reproduce(out, progress=False)
    assert again.equal and again.tensors > 0 and again.max_abs_difference == 0.0


def test_reproduce_reports_the_largest_difference_when_the_weights_changed(dense, tmp_path):
    folder, model, tokenizer = dense
    out = save_pruned(compress(model, tokenizer, RECIPES["block-layer"], progress=False), tokenizer, tmp_path / "x")
    weights = load_file(out / "model.safetensors")
    name = next(k for k in weights if "layers.2.mlp" in k)
    weights[name] = weights[name] + 0.25
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    again = reproduce(out, progress=False)
    assert not again.equal and again.largest_in == name and again.max_abs_difference == pytest.approx(0.25)


def test_the_sparsity_is_counted_as_the_recipe_says(dense):
    _, model, tokenizer = dense
    of_layers = compress(model, tokenizer, RECIPES["shortgpt"], progress=False)
    assert of_layers.n == 2  # 0.3 of 6 equal layers, rounded
    with pytest.raises(ValueError, match="at least one must remain"):  # of all parameters: the embedding dominates
        compress(model, tokenizer, Recipe(method="shortgpt", sparsity=0.9, **SMALL), progress=False)


def test_a_sparsity_is_net_of_the_replacement(dense):
    """Removal and a layer replacement at one sparsity remove the same parameters: the layer takes one more out."""
    _, model, tokenizer = dense
    budget = dict(sparsity=0.3, sparsity_of="layers", **SMALL)
    removed = compress(model, tokenizer, Recipe(**budget), progress=False)
    replaced = compress(model, tokenizer, Recipe(replacement="layer", **budget), progress=False)
    assert (removed.n, replaced.n) == (2, 3)
    assert parameter_budget(removed.model).total == parameter_budget(replaced.model).total


@pytest.mark.parametrize("data,problem", [
    ({"layers": 2, "metrik": "cosine"}, "unknown key(s) 'metrik'"),
    ({"layers": 2, "sparsity": 0.2}, "exactly one of layers"),
    ({"sparsity": 1.5}, "strictly between 0 and 1"),
    ({"layers": 2, "training": {"lr": "fast"}}, "recipe.training.lr is 'fast'"),
    ({"layers": 2, "training": {"seed": 1}}, "the recipe's seed seeds the training"),
    ({"layers": 2, "healing": {"loss": "mse"}}, "healing:"),
    ({"layers": True}, "recipe.layers is True"),
    ({"layers": 2, "method": "sharp", "heal": "lora"}, "drop heal"),
    ({"layers": 2, "calibration": {"split": "heldout"}}, "evaluation only"),
])
def test_impossible_recipes_are_one_line(data, problem):
    with pytest.raises(RecipeError) as error:
        Recipe.from_dict(data)
    assert problem in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_recipe_file_round_trips(tmp_path, suffix):
    recipe = RECIPES["sharp"]
    assert Recipe.load(recipe.save(tmp_path / f"r{suffix}")) == recipe
    (tmp_path / f"bad{suffix}").write_text("{not: [valid")
    with pytest.raises(RecipeError, match=f"bad{suffix} is not a readable recipe"):
        Recipe.load(tmp_path / f"bad{suffix}")


def test_the_one_call_imports_from_the_top_and_lazily():
    code = ("import sys, streamline_lib; assert 'torch' not in sys.modules; "
            "from streamline_lib import compress, Recipe; assert callable(compress) and Recipe().method == 'block'")
    done = subprocess.run([sys.executable, "-c", code.replace("Recipe().method", "Recipe(layers=1).method")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_recipe_flags_and_a_recipe_file_exclude_each_other(capsys, tmp_path):
    RECIPES["block-none"].save(tmp_path / "r.json")
    assert main(["prune", "--recipe", str(tmp_path / "r.json"), "--layers", "3", "--out", str(tmp_path / "x")]) == 2
    assert "drop --layers" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.parametrize("replacement,method", [("none", "block"), ("layer", "block"), ("linear", "block"),
                                                ("none", "shortgpt")])
def test_the_cli_reproduces_a_bundled_model_export(capsys, tmp_path, replacement, method):
    """`streamline prune --recipe r.json --out x` then `streamline reproduce x`: equal weights (issue 21)."""
    recipe = Recipe(method=method, layers=3, replacement=replacement,
                    **{**SMALL, "calibration": DataSpec(num_seqs=2, seq_len=32),
                       "train_data": DataSpec(split="train", num_seqs=16, seq_len=32)})
    recipe.save(tmp_path / "r.json")
    out = tmp_path / "x"
    assert main(["prune", "--recipe", str(tmp_path / "r.json"), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recipe"] == recipe.to_dict()
    assert main(["reproduce", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["equal"] and report["max_abs_difference"] == 0.0 and report["tensors"] > 200
