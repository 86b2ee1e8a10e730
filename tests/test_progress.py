"""TQDM_DISABLE turns every progress bar off, also where tqdm would draw a notebook widget."""

from __future__ import annotations

import pytest

from streamline_lib.core.progress import progress_bar


@pytest.mark.parametrize("value", ["1", "true", "True", "yes"])
def test_disabled_by_the_environment(monkeypatch, value):
    monkeypatch.setenv("TQDM_DISABLE", value)
    items = [1, 2, 3]
    assert progress_bar(items, "counting") is items


@pytest.mark.parametrize("value", [None, "", "0", "false"])
def test_enabled_otherwise(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", value)
    bar = progress_bar([1, 2, 3], "counting")
    assert list(bar) == [1, 2, 3] and bar.desc.startswith("counting")
    assert progress_bar([1], "off", enabled=False) == [1]
