"""Every notebook runs top to bottom in smoke mode, and the committed ones are full runs."""

from __future__ import annotations

import json
from pathlib import Path

import papermill
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds the book's chapters"


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(notebook, tmp_path):
    # papermill raises PapermillExecutionError on any cell error; the committed file is untouched.
    papermill.execute_notebook(str(notebook), str(tmp_path / notebook.name), kernel_name="python3",
                               parameters={"SMOKE": True}, cwd=str(notebook.parent), progress_bar=False)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_a_full_run(notebook):
    nb = json.loads(notebook.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{notebook.name} was not executed top to bottom: {counts}"
    injected = [c for c in code if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "SMOKE = False" in "".join(injected[0]["source"]), "run with make book (SMOKE=False)"
    errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"{notebook.name} has error outputs"
    assert any(o.get("data", {}).get("image/png") for c in code for o in c.get("outputs", [])), "no figure"
