"""A cache entry is filled once, atomically, by one process at a time, and verified on every read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from streamline_lib.core import files
from streamline_lib.core.cache_entry import entry_problem, filled_entry, manifest_path


def counting_builder(calls: list[Path], text: str = "content"):
    """A builder of a folder entry with two files that records every call."""
    def build(destination: Path) -> None:
        calls.append(destination)
        destination.mkdir()
        (destination / "a.txt").write_text(text)
        (destination / "sub").mkdir()
        (destination / "sub" / "b.txt").write_text(text * 2)
    return build


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(files.TEMPORARY_PREFIX)]


def test_builds_once_records_a_manifest_and_then_only_verifies(tmp_path):
    calls = []
    target = tmp_path / "entry"
    assert filled_entry(target, counting_builder(calls)) == target
    assert filled_entry(target, counting_builder(calls)) == target
    assert len(calls) == 1 and calls[0].name.startswith(files.TEMPORARY_PREFIX) and calls[0].parent == tmp_path
    recorded = json.loads(manifest_path(target).read_text())["files"]
    assert recorded == {"a.txt": files.file_digest(target / "a.txt"), "sub/b.txt": files.file_digest(target / "sub/b.txt")}
    assert no_temporaries(tmp_path)


def test_a_file_entry_is_verified_too(tmp_path):
    target = tmp_path / "data.bin"
    filled_entry(target, lambda destination: destination.write_bytes(b"\x00\x01" * 1000))
    assert entry_problem(target) is None
    target.write_bytes(b"\x00\x01" * 999)
    assert "1998 bytes, 2000 were written" in entry_problem(target)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest", "no manifest"])
def test_a_damaged_entry_gets_one_warning_and_is_rebuilt(tmp_path, damage):
    calls = []
    target = tmp_path / "entry"
    filled_entry(target, counting_builder(calls))
    part = target / "sub" / "b.txt"
    if damage == "truncate":
        part.write_text("con")
    elif damage == "flip":
        part.write_text("cOntentcontent")  # same size, other bytes
    elif damage == "delete":
        part.unlink()
    elif damage == "manifest":
        manifest_path(target).write_text('{"files": {"a.txt": ')
    else:  # an entry made by an older version, or a fill killed before its manifest
        manifest_path(target).unlink()
    with pytest.warns(RuntimeWarning, match=r"the cached .*entry does not verify: .*; rebuilding it") as caught:
        filled_entry(target, counting_builder(calls))
    assert len(caught) == 1 and len(calls) == 2
    assert part.read_text() == "contentcontent" and entry_problem(target) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        filled_entry(target, counting_builder(calls))
    assert len(calls) == 2 and no_temporaries(tmp_path)


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    def failing(destination: Path) -> None:
        destination.mkdir()
        (destination / "half.txt").write_text("half")
        raise OSError("disk full")

    target = tmp_path / "entry"
    with pytest.raises(OSError, match="disk full"):
        filled_entry(target, failing)
    assert not target.exists() and not manifest_path(target).exists() and no_temporaries(tmp_path)
    filled_entry(target, counting_builder([]))
    assert entry_problem(target) is None


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporaries_of_killed_fillers_go_and_live_ones_stay(tmp_path):
    host, pid = files.this_writer()
    stale = tmp_path / f"{files.TEMPORARY_PREFIX}{host}-{dead_pid()}-0123456789ab-entry"
    live = tmp_path / f"{files.TEMPORARY_PREFIX}{host}-{pid}-0123456789ab-entry"
    for leftover in (stale, live):
        (leftover / "model").mkdir(parents=True)
        (leftover / "model" / "weights.bin").write_bytes(b"half a conversion")
    filled_entry(tmp_path / "entry", counting_builder([]))
    assert not stale.exists()
    assert (live / "model" / "weights.bin").exists()


FILLER = """
import sys, time
from pathlib import Path
from streamline_lib.core.cache_entry import filled_entry

target, text, log = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

def slow_build(destination):
    with open(log, "a") as out:
        out.write(text + "\\n")
    destination.mkdir()
    (destination / "part1.txt").write_text(text)
    time.sleep(float(sys.argv[4]))
    (destination / "part2.txt").write_text(text)

entry = filled_entry(target, slow_build)
print((entry / "part1.txt").read_text() + (entry / "part2.txt").read_text())
"""


def start_filler(target: Path, text: str, log: Path, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FILLER, str(target), text, str(log), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_filling_one_entry_both_get_the_same_verified_entry(tmp_path):
    target, log = tmp_path / "entry", tmp_path / "builds.log"
    first = start_filler(target, "first", log, seconds=4)
    deadline = time.monotonic() + 60
    while not log.exists() and time.monotonic() < deadline:  # the first is building
        time.sleep(0.05)
    second = start_filler(target, "second", log, seconds=0)
    assert first.poll() is None, "the second process starts while the first is still building"
    outputs = [process.communicate(timeout=120) for process in (first, second)]
    for process, (out, err) in zip((first, second), outputs):
        assert process.returncode == 0, err
        assert out.strip() == "firstfirst", "the second process accepts the first one's entry"
    assert log.read_text() == "first\n", "one build only"
    assert entry_problem(target) is None and no_temporaries(tmp_path)
    assert sorted(os.listdir(target)) == ["part1.txt", "part2.txt"]
