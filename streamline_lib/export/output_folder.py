"""Claim an export's folder and replace it in one swap, so that nothing a user made is lost.

Rules, in the order they are checked (:func:`claim_output`):

* never write through a symlink, and never replace the working directory, a folder that
  holds it, the home folder or the root, whatever the flags;
* a missing folder is created exclusively (``mkdir``), and a claim file
  (:data:`CLAIM_FILE`, holding the host and process id) is created exclusively inside it,
  so two runs with the same output folder cannot both go ahead: the second one stops at
  once with one line, before any slow work;
* an existing folder is used only when it is empty, or, with ``overwrite``, when it holds an
  export of ours (its ``streamline.json``) and nothing else: a file that the export's
  manifest does not list is the user's, and the folder is replaced only with the separate
  ``overwrite_non_export`` flag.

:meth:`OutputClaim.replace_with` swaps a complete new folder in by renames: the old folder is
moved aside under a temporary name, the new one moved in, and only then is the old one
deleted. A failure at any step leaves the old export whole; a run killed between the two
renames leaves the old export beside the target, and the next claim of that target moves
it back. Stale temporaries and claims of killed runs are cleaned up on the next claim.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..core.files import (
    TEMPORARY_PREFIX,
    give_default_modes,
    is_stale_temporary,
    refuse_symlink,
    remove_stale_temporaries,
    temporary_name,
    this_writer,
    writer_is_gone,
)

__all__ = ["CLAIM_FILE", "OutputClaim", "claim_output", "check_not_precious"]

CLAIM_FILE = ".streamline-claim"
"""Inside a folder being written: ``<host> <pid>`` of the run writing it."""

_UNREADABLE_CLAIM_AGE_S = 10
_PREVIOUS = "previous-"  # the label of an old export moved aside during a swap
_HELD: set[Path] = set()  # folders this process has claimed (a claim is re-entrant within one process)


def check_not_precious(path: Path) -> None:
    """Refuse to replace the working directory, a folder above it, the home folder or the root."""
    resolved = path.resolve()
    here = Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        what = "the working directory" if resolved == here else "a folder that holds the working directory"
        raise ValueError(f"refusing to write the export to {path}: it is {what}; choose a new folder, "
                         "e.g. --out pruned-model")
    if resolved == Path.home().resolve() or resolved == Path(resolved.anchor):
        raise ValueError(f"refusing to write the export to {path}: it is the home folder or the root; "
                         "choose a new folder")


def _claim_holder(path: Path) -> tuple[str, int] | None:
    """The ``(host, pid)`` in a claim file, or None if it is unreadable."""
    try:
        host, pid = path.read_text(encoding="utf-8").split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def _claim_is_stale(path: Path) -> bool:
    """A claim of a run that has ended; an unreadable one only once it is old (it may be being written)."""
    holder = _claim_holder(path)
    if holder is None:
        return time.time() - path.stat().st_mtime > _UNREADABLE_CLAIM_AGE_S
    return writer_is_gone(*holder)


def _recover_previous_exports(folder: Path) -> None:
    """Move back old exports that runs killed mid-swap left in ``folder``; drop those whose swap finished."""
    for entry in folder.iterdir():
        label = entry.name[len(TEMPORARY_PREFIX):].split("-", 3)[-1]
        if not (label.startswith(_PREVIOUS) and is_stale_temporary(entry)):
            continue
        target = folder / label.removeprefix(_PREVIOUS)
        if target.exists():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            os.rename(entry, target)
            warnings.warn(f"moved back the export {target} that an interrupted run had set aside as {entry.name}",
                          RuntimeWarning, stacklevel=4)


def _foreign_entries(target: Path, export_files: Callable[[Path], set[str] | None]) -> list[str] | None:
    """Entries of ``target`` that are not part of its export; None when it holds no export of ours."""
    ours = export_files(target)
    if ours is None:
        return None
    return sorted(e.name for e in target.iterdir() if e.name not in ours | {CLAIM_FILE})


def _check_existing(target: Path, overwrite: bool, overwrite_non_export: bool,
                    export_files: Callable[[Path], set[str] | None], fix: str) -> None:
    if not target.is_dir():
        raise FileExistsError(f"{target} exists and is a file; choose a folder name that is not taken")
    entries = [e for e in target.iterdir() if e.name != CLAIM_FILE]
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(f"{target} exists and is not empty; choose another folder or {fix}")
    if overwrite_non_export:
        return
    foreign = _foreign_entries(target, export_files)
    if foreign is None:
        raise FileExistsError(f"{target} is not an export of streamline_lib (it has no streamline.json), so "
                              "overwriting would delete someone's files; choose another folder")
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise FileExistsError(f"{target} holds files that are not part of its export ({shown}); overwriting "
                              "would delete them: move them away, or replace the whole folder on purpose "
                              "(--force-non-export, overwrite_non_export=True)")


def _take_claim(target: Path) -> None:
    """Create the claim file exclusively; a live claim of another run stops this one."""
    claim = target / CLAIM_FILE
    if claim.exists() and not claim.is_symlink() and _claim_is_stale(claim):
        claim.unlink(missing_ok=True)
    try:
        descriptor = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        holder = _claim_holder(claim)
        who = f"process {holder[1]} on {holder[0]}" if holder else "another run"
        raise FileExistsError(f"{target} is being written by {who}; wait for it to finish or choose another "
                              "folder") from None
    except PermissionError:
        raise PermissionError(f"cannot write into {target} (permission denied); choose a folder you can "
                              "write to") from None
    with os.fdopen(descriptor, "w") as out:
        host, pid = this_writer()
        out.write(f"{host} {pid}\n")


@dataclass
class OutputClaim:
    """A folder claimed for one export; :meth:`replace_with` puts the finished export there."""

    path: Path
    created: bool  # this claim made the folder (it is removed again if nothing is written)
    committed: bool = False

    def new_folder(self) -> Path:
        """An empty folder beside :attr:`path` (same file system, so a rename can move it) to write the export
        into before :meth:`replace_with`."""
        folder = self.path.with_name(temporary_name(self.path.name))
        folder.mkdir()
        return folder

    def replace_with(self, new: Path) -> None:
        """Swap the complete folder ``new`` in for :attr:`path` by renames; the old content is kept on failure."""
        give_default_modes(new)  # temporaries are 0700; an export is readable like any new folder
        old = self.path.with_name(temporary_name(f"{_PREVIOUS}{self.path.name}"))
        os.rename(self.path, old)
        try:
            os.rename(new, self.path)
        except OSError as error:
            os.rename(old, self.path)
            raise OSError(f"could not move the new export into {self.path} ({error.strerror or error}); "
                          "the folder is as it was") from None
        self.committed = True
        shutil.rmtree(old, ignore_errors=True)  # what is left is cleaned up by the next claim here


@contextmanager
def claim_output(path: str | os.PathLike, export_files: Callable[[Path], set[str] | None], *,
                 overwrite: bool = False, overwrite_non_export: bool = False,
                 fix: str = "pass overwrite=True") -> Iterator[OutputClaim]:
    """Claim ``path`` for an export (see the module docstring); released, or removed if made, on exit.

    ``export_files(folder)`` names the files of the export in ``folder`` (None: no export of
    ours there). Within one process a claim is re-entrant: the command line claims the
    folder before its slow work and :func:`streamline_lib.export.checkpoint.save_pruned` claims it again.
    """
    target = Path(path).absolute()
    if target in _HELD:
        yield OutputClaim(target, created=False)
        return
    refuse_symlink(target)
    check_not_precious(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(target.parent, os.W_OK):
        raise PermissionError(f"cannot write into {target.parent} (permission denied); choose a folder you "
                              "can write to")
    _recover_previous_exports(target.parent)  # before the clean-up, which would delete them
    remove_stale_temporaries(target.parent)
    try:
        target.mkdir()
        created = True
    except FileExistsError:
        created = False
        _check_existing(target, overwrite, overwrite_non_export, export_files, fix)
    _take_claim(target)
    claim = OutputClaim(target, created)
    _HELD.add(target)
    try:
        yield claim
    finally:
        _HELD.discard(target)
        if not claim.committed:
            (target / CLAIM_FILE).unlink(missing_ok=True)
            if created and target.is_dir() and not any(target.iterdir()):
                target.rmdir()
