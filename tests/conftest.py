"""Shared fixtures. The real bundled model is loaded once per test session; plain shared helpers are in helpers.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]


def _share_the_cores() -> None:
    """Under pytest-xdist, give each worker (and the notebook kernels it starts) its share of the cores.

    Torch would otherwise start one thread per core in every worker, and n workers on n cores would each
    fight n-1 others. Set before torch is imported, so that torch reads it; a value the caller set is kept.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, threads)


_share_the_cores()


@pytest.fixture(scope="session")
def smollm2():
    """The bundled SmolLM2-135M in float32 (exact numbers, no bfloat16 rounding)."""
    from streamline_lib.models import load_model

    return load_model("smollm2-135m", dtype="float32")


@pytest.fixture(scope="module")
def tiny():
    """A random 6-layer llama and a word-level tokenizer of its 64 ids (:func:`helpers.tiny_llama_and_tokenizer`)."""
    from helpers import tiny_llama_and_tokenizer

    return tiny_llama_and_tokenizer()


@pytest.fixture(scope="session")
def html(tmp_path_factory) -> Path:
    """The book built from the committed notebooks with -W, once per test run; its html folder.

    Under pytest-xdist the workers share one build: the first worker that needs it builds it in the run's
    common temporary folder under a file lock, and the others wait and read it (a build takes about a minute).
    """
    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent  # the run's folder, above each worker's own
    out = shared / "book"
    built = out / "built"
    with FileLock(str(shared / "book.lock")):
        if not built.exists():
            jb = Path(sys.executable).with_name("jupyter-book")
            result = subprocess.run(
                [str(jb), "build", str(ROOT), "--config", "book/_config.yml", "--toc", "book/_toc.yml",
                 "--path-output", str(out), "-W", "--keep-going"],
                cwd=ROOT, capture_output=True, text=True,
            )
            assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
            built.touch()
    return out / "_build" / "html"
