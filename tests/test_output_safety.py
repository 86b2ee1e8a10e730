"""Nothing a user made is lost: --force, symlinks, atomic swaps, kills, concurrent runs, reproducible exports.

Each test here failed on the code before these guards existed (issue 23): ``--force`` deleted
any folder, the card was written through a symlink, the old export was deleted before the new
one was moved in, two runs with one ``--out`` both "succeeded", and an ``ffn`` export differed
between two runs with the same seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import pruned_for_export

from streamline_lib.cli import main
from streamline_lib.core.files import TEMPORARY_PREFIX, default_file_mode
from streamline_lib.export import (
    CUSTOM_WEIGHTS_FILE,
    METADATA_FILE,
    claim_export_folder,
    read_metadata,
    record_evaluation,
    save_pruned,
    verify_export,
)
from streamline_lib.export.model_card import CARD_FILE
from streamline_lib.export.output_folder import CLAIM_FILE

ROOT = Path(__file__).resolve().parents[1]
EVALUATION = {"tasks": {"piqa": {"acc": 0.5, "items": 10}}, "average": {"acc": 0.5}, "items": 10,
              "accuracy_interval": [0.2, 0.8], "perplexity": 12.3, "perplexity_tokens": 256, "dtype": "float32"}


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative name, with its sha256: equal snapshots, equal bytes.

    A claim file is left out: a killed run leaves its claim, which the next run takes over.
    """
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != CLAIM_FILE}


@pytest.fixture
def export(tiny, tmp_path):
    model, tokenizer = tiny
    return save_pruned(pruned_for_export(model, "none"), tokenizer, tmp_path / "exp", source_model="tiny", metric="cosine")


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --force ------------------------------------------------------------------------------------------------------

def test_force_never_replaces_the_working_directory(capsys, tmp_path, monkeypatch):
    """`--out . --force` in a folder with a precious file emptied it, then failed with OSError."""
    (tmp_path / "precious").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path), ".."):
        for flags in (["--force"], ["--force", "--force-non-export"]):
            line = _error(capsys, ["prune", "--layers", "2", "--out", out, *flags])
            assert "working directory" in line
    assert (tmp_path / "precious").read_text() == "mine"


def test_force_never_replaces_the_home_folder(capsys, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    line = _error(capsys, ["prune", "--layers", "2", "--out", str(home), "--force", "--force-non-export"])
    assert "home folder" in line


def test_force_replaces_an_export_but_not_one_with_the_users_files(tiny, export):
    model, tokenizer = tiny
    (export / "my-notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="my-notes.txt"):
        save_pruned(pruned_for_export(model, "none"), tokenizer, export, source_model="tiny", overwrite=True)
    assert (export / "my-notes.txt").read_text() == "mine"
    (export / "my-notes.txt").unlink()
    save_pruned(pruned_for_export(model, "layer"), tokenizer, export, source_model="tiny", overwrite=True)
    assert read_metadata(export)["replacement"] == "layer"


def test_force_does_not_replace_a_folder_that_is_not_an_export(capsys, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    line = _error(capsys, ["prune", "--layers", "2", "--out", str(tmp_path / "photos"), "--force"])
    assert "not an export" in line and (tmp_path / "photos" / "a.jpg").exists()


def test_eval_of_a_bundled_name_never_writes_into_a_folder_of_that_name(tiny, tmp_path, monkeypatch, capsys):
    """`eval --model smollm2-135m` beside an export ./smollm2-135m evaluated the dense model into that export."""
    model, tokenizer = tiny
    export = save_pruned(pruned_for_export(model, "none"), tokenizer, tmp_path / "smollm2-135m", source_model="tiny")
    before = _snapshot(export)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()  # the save's progress bar
    line = _error(capsys, ["eval", "--model", "smollm2-135m", "--limit", "1", "--tasks", "piqa"])
    assert "./smollm2-135m" in line
    assert _snapshot(export) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_output_folder_is_refused_before_loading(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        line = _error(capsys, ["prune", "--layers", "2", "--out", str(locked / "exp")])
        assert "permission denied" in line
    finally:
        locked.chmod(0o755)


# symlinks and the card ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("link_target", ["missing-file", "profile"])
def test_eval_never_writes_through_a_symlinked_card(export, tmp_path, link_target):
    outside = tmp_path / link_target
    if link_target == "profile":
        outside.write_text("export PATH=/usr/bin\n")
    before = outside.read_text() if outside.exists() else None
    (export / CARD_FILE).unlink()
    (export / CARD_FILE).symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        record_evaluation(export, EVALUATION)
    assert (outside.read_text() if outside.exists() else None) == before
    assert "evaluation" not in read_metadata(export)  # nothing half-recorded either


def test_a_symlinked_metadata_file_or_output_folder_is_refused(export, tmp_path, capsys):
    real = tmp_path / "elsewhere.json"
    real.write_text((export / METADATA_FILE).read_text())
    (export / METADATA_FILE).unlink()
    (export / METADATA_FILE).symlink_to(real)
    with pytest.raises(ValueError, match="symbolic link"):
        read_metadata(export)
    (tmp_path / "real-out").mkdir()
    (tmp_path / "link-out").symlink_to(tmp_path / "real-out")
    line = _error(capsys, ["prune", "--layers", "2", "--out", str(tmp_path / "link-out")])  # before loading
    assert "symbolic link" in line


def test_card_fields_cannot_start_lines_or_markup(tiny, tmp_path):
    model, tokenizer = tiny
    source = "evil\n$(curl x | sh)\n# Heading <script>alert(1)</script> [link](http://x)"
    out = save_pruned(pruned_for_export(model, "none"), tokenizer, tmp_path / "exp", source_model=source)
    card = (out / CARD_FILE).read_text()
    assert not any(line.startswith(("$(curl", "# Heading")) for line in card.splitlines())
    assert "<script>" not in card and "](http" not in card
    assert read_metadata(out)["source_model"] == source  # the record keeps the value as given


@pytest.mark.parametrize("content,problem", [("{not json", "not valid JSON"), ("{}", "has no 'format_version'"),
                                             ("[1, 2]", "holds a JSON list"), ('"text"', "holds a JSON str")])
def test_a_damaged_metadata_file_is_one_line_naming_it(export, capsys, content, problem):
    (export / METADATA_FILE).write_text(content)
    line = _error(capsys, ["eval", "--model", str(export), "--limit", "1", "--tasks", "piqa"])
    assert problem in line and str(export / METADATA_FILE) in line


def test_a_truncated_weights_file_is_refused_by_name(export):
    weights = export / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="model.safetensors is truncated or changed"):
        verify_export(export)


# atomic replacement -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("failing_call", [1, 2])
def test_a_failed_rename_leaves_the_old_export_whole(tiny, export, monkeypatch, failing_call):
    model, tokenizer = tiny
    before = _snapshot(export)
    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append(src)
        if len(calls) == failing_call:
            raise OSError(5, "Input/output error")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError):
        save_pruned(pruned_for_export(model, "layer"), tokenizer, export, source_model="tiny", overwrite=True)
    monkeypatch.setattr(os, "rename", real_rename)
    assert _snapshot(export) == before
    assert not [p for p in export.parent.iterdir() if p.name.startswith(TEMPORARY_PREFIX)]


def test_an_undeletable_old_export_does_not_stop_the_swap(tiny, export, monkeypatch):
    model, tokenizer = tiny
    monkeypatch.setattr("shutil.rmtree", lambda *args, **kwargs: None)  # the old export cannot be deleted
    save_pruned(pruned_for_export(model, "layer"), tokenizer, export, source_model="tiny", overwrite=True)
    assert read_metadata(export)["replacement"] == "layer"  # the new export is in place, whole
    monkeypatch.undo()
    left = [p for p in export.parent.iterdir() if p.name.startswith(TEMPORARY_PREFIX)]
    assert left  # the old one is left beside it, under our temporary name (removed once this process has ended)


def _run_killed(script: str, cwd: Path) -> None:
    """Run ``script`` in a fresh Python that kills itself with SIGKILL at the point the script chooses."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}"})
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]


_SAVE_AND_DIE = """
    import os, signal, sys
    from helpers import pruned_for_export, tiny_llama_and_tokenizer
    import streamline_lib.export.checkpoint as export
    import streamline_lib.export.output_folder as output_folder
    model, tokenizer = tiny_llama_and_tokenizer()
    die = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    {patch}
    export.save_pruned(pruned_for_export(model, "layer"), tokenizer, "exp", source_model="tiny", overwrite=True)
"""


def test_kill_during_save_leaves_the_old_export_and_no_lasting_temporary(tiny, export):
    """Killed while writing the new files: the old export is whole; the next save removes the leftover."""
    model, tokenizer = tiny
    before = _snapshot(export)
    _run_killed(_SAVE_AND_DIE.format(patch="export.write_model_card = die"), export.parent)
    leftovers = [p for p in export.parent.iterdir() if p.name.startswith(TEMPORARY_PREFIX)]
    assert leftovers and _snapshot(export) == before
    save_pruned(pruned_for_export(model, "layer"), tokenizer, export.parent / "other", source_model="tiny")
    assert not [p for p in export.parent.iterdir() if p.name.startswith(TEMPORARY_PREFIX)]
    assert _snapshot(export) == before and (export / CLAIM_FILE).exists()  # the dead run's claim ...
    save_pruned(pruned_for_export(model, "layer"), tokenizer, export, source_model="tiny", overwrite=True)
    assert not (export / CLAIM_FILE).exists()  # ... is taken over by the next run on that folder


def test_kill_between_the_two_renames_is_undone_by_the_next_run(tiny, export):
    """Killed after the old export was moved aside, before the new one was moved in: the next claim moves it back."""
    before = _snapshot(export)
    patch = """
    real_rename = os.rename
    calls = []
    def rename(src, dst):
        calls.append(src)
        if len(calls) == 2:
            die()
        real_rename(src, dst)
    output_folder.os.rename = rename
    """
    _run_killed(_SAVE_AND_DIE.format(patch=textwrap.indent(textwrap.dedent(patch), "    ").strip()), export.parent)
    assert not export.exists()
    with pytest.warns(RuntimeWarning, match="moved back the export"):
        with claim_export_folder(export.parent / "unrelated"):
            pass
    assert _snapshot(export) == before


def test_kill_during_training_leaves_a_claim_the_next_run_takes_over(capsys, tmp_path, smollm2):
    """A run killed while training leaves its claimed, empty --out; the next run without --force may use it."""
    out = tmp_path / "exp"
    script = f"""
    import os, signal
    import streamline_lib.methods.pruning as pruning
    from streamline_lib.cli import main
    pruning.train_replacement = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    main(["prune", "--layers", "2", "--num-seqs", "2", "--seq-len", "32", "--replacement", "ffn",
          "--train-tokens", "256", "--out", {str(out)!r}])
    """
    _run_killed(script, tmp_path)
    assert [p.name for p in out.iterdir()] == [CLAIM_FILE]
    assert main(["prune", "--layers", "2", "--num-seqs", "2", "--seq-len", "32", "--out", str(out)]) == 0
    assert read_metadata(out)["n"] == 2 and not (out / CLAIM_FILE).exists()


# concurrent runs ----------------------------------------------------------------------------------------------

def test_two_runs_with_one_output_folder_cannot_both_write(capsys, tmp_path):
    out = tmp_path / "exp"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from streamline_lib.export import claim_export_folder
            with claim_export_folder({str(out)!r}):
                print("claimed", flush=True)
                time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        line = _error(capsys, ["prune", "--layers", "2", "--out", str(out)])
        assert f"being written by process {holder.pid}" in line
        line = _error(capsys, ["prune", "--layers", "2", "--out", str(out), "--force"])
        assert "being written" in line
    finally:
        holder.kill()
        holder.wait()


# reproducible exports, modes ----------------------------------------------------------------------------------

def test_an_ffn_export_is_bit_for_bit_reproducible(capsys, tmp_path, smollm2):
    """The same prune twice with the same seed: the same weight files (the idle attention was random before)."""
    digests = []
    for name in ("a", "b"):
        argv = ["prune", "--layers", "2", "--num-seqs", "2", "--seq-len", "32", "--replacement", "ffn",
                "--train-tokens", "512", "--out", str(tmp_path / name), "--seed", "3", "--dtype", "float32"]
        assert main(argv) == 0
        digests.append(_snapshot(tmp_path / name))
    weights = {name for name in digests[0] if name.endswith(".safetensors")}
    assert weights == {"model.safetensors"}
    assert {k: digests[0][k] for k in digests[0] if k != METADATA_FILE and k != CARD_FILE} == \
        {k: digests[1][k] for k in digests[1] if k != METADATA_FILE and k != CARD_FILE}


def test_every_file_of_an_export_has_the_umasks_mode(export):
    for path in [export, *export.rglob("*")]:
        assert path.stat().st_mode & 0o777 == default_file_mode(directory=path.is_dir()), path


def test_the_manifest_lists_every_weight_and_tokenizer_file(export):
    files = read_metadata(export)["files"]
    assert "model.safetensors" in files and "config.json" in files and CUSTOM_WEIGHTS_FILE not in files
    assert set(files) == {p.name for p in export.iterdir()} - {METADATA_FILE, CARD_FILE}
    assert json.loads((export / METADATA_FILE).read_text())["format_version"] == 2
