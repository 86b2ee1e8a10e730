"""Shared fixtures. The real bundled model is loaded once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2():
    """The bundled SmolLM2-135M in float32 (exact numbers, no bfloat16 rounding)."""
    from streamline_lib.models import load_model

    return load_model("smollm2-135m", dtype="float32")
