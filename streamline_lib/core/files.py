"""Writing files so that nothing is half-written, nothing is written through a symlink, and nothing is trusted.

Every file the library writes (a cache entry, an export's ``streamline.json`` and card, a
chapter's results) goes through :func:`atomic_write_text` or :func:`atomic_write_bytes`: the
bytes go to a temporary file in the same folder, which is renamed over the target only
when complete, so a crash leaves the old file or the new one, never a mixture. The
temporary's name carries the writer's process id (:func:`temporary_name`), so a later run
can tell a stale leftover of a killed process from one that is still being written and
remove it (:func:`remove_stale_temporaries`).

A file read back is checked against the size and sha256 recorded when it was written
(:func:`file_digest`), instead of being trusted.

Files and folders get the modes the user's umask gives any new file (``0644`` and
``0755`` under the usual umask), not the ``0600`` / ``0700`` of Python's temporary files,
so that a service account (a llama.cpp or Ollama server user) can read an export.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import uuid
from pathlib import Path

__all__ = ["TEMPORARY_PREFIX", "temporary_name", "this_writer", "writer_is_gone", "is_stale_temporary",
           "remove_stale_temporaries", "remove_path", "atomic_write_bytes", "atomic_write_text", "sha256_of", "file_digest", "refuse_symlink",
           "default_file_mode", "give_default_modes"]

TEMPORARY_PREFIX = ".streamline-tmp-"
"""Every temporary file or folder of ours starts with this, then ``<host>-<pid>-<random>-``."""

_HOST = socket.gethostname().replace("-", "_")


def temporary_name(label: str = "") -> str:
    """A fresh hidden name for a temporary of this process: prefix, host, process id, random part, ``label``."""
    return f"{TEMPORARY_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}-{label}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def this_writer() -> tuple[str, int]:
    """``(host, pid)`` of this process, as temporaries and claims record it."""
    return _HOST, os.getpid()


def writer_is_gone(host: str, pid: int) -> bool:
    """Whether the process ``pid`` on ``host`` has ended (only a process on this host can be checked)."""
    return host == _HOST and not _pid_alive(pid)


def is_stale_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary of ours whose writer, on this host, is no longer running."""
    if not path.name.startswith(TEMPORARY_PREFIX):
        return False
    host, _, rest = path.name[len(TEMPORARY_PREFIX):].partition("-")
    pid = rest.partition("-")[0]
    return pid.isdigit() and writer_is_gone(host, int(pid))


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the leftovers of killed writers in ``folder`` (never a live process's); returns what went."""
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if is_stale_temporary(entry):
            remove_path(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def remove_path(path: Path, ignore_errors: bool = False) -> None:
    """Delete a file, a symlink (not what it points to) or a whole folder; a missing path is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=ignore_errors)
    else:
        path.unlink(missing_ok=True)


def refuse_symlink(path: Path) -> None:
    """Raise when ``path`` is a symlink: we never write through one (it could point anywhere)."""
    if path.is_symlink():
        raise ValueError(f"{path} is a symbolic link (to {os.readlink(path)}); refusing to write through it: "
                         "replace it with a regular file or folder")


def default_file_mode(directory: bool = False) -> int:
    """The mode a new file (or folder) gets under the current umask: 0644 (0755) under umask 022."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def give_default_modes(root: Path) -> None:
    """Give ``root`` and everything under it the umask's default modes (temporaries are created 0600/0700)."""
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        if not path.is_symlink():
            path.chmod(default_file_mode(directory=path.is_dir()))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename; never through a symlink."""
    path = Path(path)
    refuse_symlink(path)
    temporary = path.with_name(temporary_name(path.name))
    try:
        with open(temporary, "xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.chmod(default_file_mode())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: str | os.PathLike) -> dict[str, int | str]:
    """``{"size": bytes, "sha256": hex}`` of a file: what is recorded when it is written and checked when read."""
    return {"size": os.path.getsize(path), "sha256": sha256_of(path)}
