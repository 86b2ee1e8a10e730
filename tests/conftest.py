"""Shared fixtures. The real bundled model is loaded once per test session; plain shared helpers are in helpers.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    """The book built from the committed notebooks with -W, once per session; its html folder."""
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run(
        [str(jb), "build", str(ROOT), "--config", "book/_config.yml", "--toc", "book/_toc.yml",
         "--path-output", str(out), "-W", "--keep-going"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out / "_build" / "html"
