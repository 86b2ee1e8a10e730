"""A cache entry filled once, atomically, by one process at a time, and verified on every read.

An entry is a file or a folder at ``target`` (an extracted wheel file, a converted model).
:func:`filled_entry` returns it only after checking every file in it against the manifest
beside it, ``<name>.manifest.json`` (file name -> size and sha256, :func:`.files.file_digest`).
When the entry is missing or does not verify, it is built by a caller's function into a
temporary beside ``target`` (named by :func:`.files.temporary_name`), renamed into place when
complete, and its manifest is written last: an entry without a manifest is never used.

Only one process fills an entry at a time (a lock file beside it, :mod:`filelock`, which the
system releases if its holder is killed); a process that waited for the lock checks the entry
again and accepts the one the other process made. A damaged entry (truncated, bytes flipped,
a file missing) gets one ``RuntimeWarning`` and is rebuilt; leftovers of killed fillers are
removed on the next fill.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

from filelock import FileLock

from . import files

__all__ = ["MANIFEST_SUFFIX", "manifest_path", "digest_problem", "entry_problem", "filled_entry"]

MANIFEST_SUFFIX = ".manifest.json"
"""The manifest of the entry ``<name>`` is ``<name>.manifest.json`` beside it."""

_ITSELF = "."
"""The manifest's name for a file entry's only file (``target / "."`` is ``target``)."""


def manifest_path(target: Path) -> Path:
    """Where the manifest of the entry ``target`` is: beside it, so one rename puts the entry in place."""
    return target.with_name(target.name + MANIFEST_SUFFIX)


def _lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


def digest_problem(path: Path, recorded: Mapping[str, int | str]) -> str | None:
    """How ``path`` differs from the ``files.file_digest`` recorded when it was written, or None if it matches."""
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    if size != recorded["size"]:
        return f"{path.name} has {size} bytes, {recorded['size']} were written"
    if files.sha256_of(path) != recorded["sha256"]:
        return f"{path.name} does not have the sha256 it was written with"
    return None


def _files_of(entry: Path) -> dict[str, Path]:
    """The entry's files by their path inside it (a file entry: itself, as ``"."``)."""
    if entry.is_dir():
        return {path.relative_to(entry).as_posix(): path for path in sorted(entry.rglob("*")) if path.is_file()}
    return {_ITSELF: entry}


def entry_problem(target: Path) -> str | None:
    """What is wrong with the entry ``target`` compared with its manifest, or None when it verifies."""
    manifest = manifest_path(target)
    if not manifest.exists():
        return f"{manifest.name} is missing (an older version or an interrupted fill made the entry)"
    if not target.exists():
        return f"{target.name} is missing"
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        problems = (digest_problem(target / name, digest) for name, digest in recorded.items())
        return next((problem for problem in problems if problem is not None), None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"{manifest.name} is unreadable ({type(error).__name__}: {error})"


def _put_in_place(built: Path, target: Path) -> None:
    """Rename ``built`` to ``target``, moving a damaged old entry aside first (a folder cannot be renamed onto)."""
    manifest_path(target).unlink(missing_ok=True)  # the old entry's manifest must not vouch for the new one
    if target.exists() or target.is_symlink():
        old = target.with_name(files.temporary_name(target.name))
        os.replace(target, old)
        files.remove_path(old)
    os.replace(built, target)


def _fill(target: Path, build: Callable[[Path], None]) -> None:
    """Build the entry into a temporary, rename it to ``target``, then write its manifest."""
    built = target.with_name(files.temporary_name(target.name))
    try:
        build(built)
        digests = {name: files.file_digest(path) for name, path in _files_of(built).items()}
        files.give_default_modes(built)
        _put_in_place(built, target)
    except BaseException:
        files.remove_path(built)
        raise
    files.atomic_write_text(manifest_path(target), json.dumps({"files": digests}, indent=1) + "\n")


def filled_entry(target: Path, build: Callable[[Path], None], remedy: str = "rebuilding it") -> Path:
    """``target``, verified against its manifest; first built by ``build(temporary)`` if missing or damaged.

    ``build`` writes the entry (a file or a folder) at the path it is given. ``remedy`` ends the
    warning about an entry that does not verify (``"re-extracting it"``).
    """
    if entry_problem(target) is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(_lock_path(target)):
        problem = entry_problem(target)  # another process may have filled it while we waited
        if problem is None:
            return target
        if target.exists() or manifest_path(target).exists():
            warnings.warn(f"the cached {target} does not verify: {problem}; {remedy}", RuntimeWarning, stacklevel=2)
        files.remove_stale_temporaries(target.parent)
        _fill(target, build)
    return target
