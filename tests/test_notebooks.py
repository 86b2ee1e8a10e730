"""Every notebook runs top to bottom in smoke mode, and the committed ones are full runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SECOND_MODEL = "gemma3-270m"
# chapters 1-6 executed on the second bundled model by make second-model
SECOND_MODEL_RUNS = sorted((ROOT / "notebooks" / SECOND_MODEL).glob("*.ipynb"))
# make other-runs: chapters at the layers cut (25% of the decoder layers' parameters), one folder per model
LAYERS_CUT_MODELS = ["smollm2-135m", SECOND_MODEL]
LAYERS_CUT_RUNS = sorted(p for model in LAYERS_CUT_MODELS for p in (ROOT / "notebooks" / f"{model}-layers").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds the book's chapters"


def _has_profiles(notebook: Path) -> bool:
    """Whether the chapter is in issue 22's layout, with a PROFILE parameter; the others still take SMOKE
    (until every chapter is re-executed in the new layout, when this test helper goes)."""
    return any("injected-parameters" not in c["metadata"].get("tags", []) and "parameters" in c["metadata"].get("tags", [])
               and "PROFILE = " in "".join(c["source"]) for c in json.loads(notebook.read_text())["cells"])


def _book_results() -> dict[str, bytes]:
    return {str(f.relative_to(ROOT)): f.read_bytes() for f in (ROOT / "notebooks" / "results").rglob("*.json")
            if "smoke" not in f.parts}


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(notebook, tmp_path):
    papermill = pytest.importorskip("papermill", reason="the book extra runs the notebooks")
    before = _book_results()
    parameters = {"PROFILE": "smoke"} if _has_profiles(notebook) else {"SMOKE": True}
    # papermill raises PapermillExecutionError on any cell error; the committed file is untouched.
    papermill.execute_notebook(str(notebook), str(tmp_path / notebook.name), kernel_name="python3",
                               parameters=parameters, cwd=str(notebook.parent), progress_bar=False)
    if _has_profiles(notebook):
        assert _book_results() == before, "a smoke run changed the book's results (notebooks/results/)"


@pytest.mark.parametrize("notebook", NOTEBOOKS + SECOND_MODEL_RUNS + LAYERS_CUT_RUNS,
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_notebook_is_a_full_run(notebook):
    nb = json.loads(notebook.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{notebook.name} was not executed top to bottom: {counts}"
    injected = [c for c in code if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected, f"{notebook.name}: run it with make reproduce"
    if _has_profiles(notebook):
        book_folder = "results" if notebook.parent.name == "notebooks" else f"results/{notebook.parent.name}"
        assert 'PROFILE = "book"' in "".join(injected[0]["source"]), "run with make reproduce (PROFILE=book)"
        assert f'RESULTS_DIR = "{book_folder}"' in "".join(injected[0]["source"]), \
            f"the book's run saves to {book_folder}: run it with make reproduce"
    else:
        assert "SMOKE = False" in "".join(injected[0]["source"]), "run with make reproduce (SMOKE=False)"
    errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"{notebook.name} has error outputs"
    bars = [o for c in code for o in c.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {}) or "it/s]" in "".join(o.get("text", ""))]
    assert not bars, f"{notebook.name} shows progress bars: execute it with TQDM_DISABLE=1 (make reproduce does)"
    assert any(o.get("data", {}).get("image/png") for c in code for o in c.get("outputs", [])), "no figure"


CHAPTERS_WITH_VERDICTS = {"01_redundancy": {"C1"}, "02_metrics": {"C2"}, "03_replacement": {"C3", "C4"},
                          "04_stability": {"C7"}, "05_sparsity": {"C5", "C6"}, "06_speed": {"C12"},
                          "07_lora": {"C8", "C9"}, "08_ablations": {"C10", "C11"},
                          "10_peers": {"S1", "S2", "S3", "S4", "R1"}}


@pytest.mark.parametrize(("chapter", "claims"), CHAPTERS_WITH_VERDICTS.items())
def test_committed_results_hold_each_chapters_verdicts(chapter, claims):
    """The ledger reads notebooks/results/<chapter>.json, written by the chapter's full run."""
    from streamline_lib.book.claims import ClaimVerdict, load_chapter_results

    saved = load_chapter_results(ROOT / "notebooks" / "results")
    assert chapter in saved, f"{chapter} saved no results: run make reproduce"
    verdicts = [ClaimVerdict(**v) for v in saved[chapter]["verdicts"]]  # validates every field
    assert {v.claim for v in verdicts} == claims
    assert saved[chapter]["numbers"], f"{chapter} saved no numbers"


def _sources(notebook: Path) -> list[str]:
    """The cells' sources without papermill's injected parameters: what the run executed."""
    return ["".join(c["source"]) for c in json.loads(notebook.read_text())["cells"]
            if "injected-parameters" not in c["metadata"].get("tags", [])]


def test_the_second_model_ran_chapters_1_to_6_with_their_verdicts():
    """make second-model: the executed copies ran the chapters as they are now on Gemma-3-270M and saved
    their verdicts to its own results folder."""
    from streamline_lib.book.claims import ClaimVerdict, load_chapter_results

    assert [p.stem for p in SECOND_MODEL_RUNS] == [p.stem for p in NOTEBOOKS[:6]]
    for notebook in SECOND_MODEL_RUNS:
        code = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
        injected = "".join(next(c for c in code if "injected-parameters" in c["metadata"].get("tags", []))["source"])
        assert f'MODEL = "{SECOND_MODEL}"' in injected and f'RESULTS_DIR = "results/{SECOND_MODEL}"' in injected
        chapter = ROOT / "notebooks" / notebook.name
        assert _sources(notebook) == _sources(chapter), f"{notebook} is stale: re-run make second-model"
    saved = load_chapter_results(ROOT / "notebooks" / "results" / SECOND_MODEL)
    for chapter in [p.stem for p in NOTEBOOKS[1:6]]:
        verdicts = [ClaimVerdict(**v) for v in saved[chapter]["verdicts"]]
        assert {v.claim for v in verdicts} == CHAPTERS_WITH_VERDICTS[chapter]


def test_the_layers_cut_ran_the_chapters_as_they_are_on_both_models():
    """make other-runs: each copy ran its chapter as it is now, at SPARSITY_OF = "layers", saving to its own folder."""
    from streamline_lib.book.claims import load_chapter_results

    assert LAYERS_CUT_RUNS, "make other-runs has not been run"
    for model in LAYERS_CUT_MODELS:
        runs = sorted((ROOT / "notebooks" / f"{model}-layers").glob("*.ipynb"))
        assert [p.stem for p in runs] == [p.stem for p in LAYERS_CUT_RUNS if p.parent.name == f"{model}-layers"]
        saved = load_chapter_results(ROOT / "notebooks" / "results" / f"{model}-layers")
        for notebook in runs:
            code = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
            injected = "".join(next(c for c in code if "injected-parameters" in c["metadata"].get("tags", []))["source"])
            assert f'MODEL = "{model}"' in injected and 'SPARSITY_OF = "layers"' in injected
            assert _sources(notebook) == _sources(ROOT / "notebooks" / notebook.name), \
                f"{notebook} is stale: re-run make other-runs"
            assert saved[notebook.stem]["numbers"]["sparsity_of"] == "layers"


CHAPTERS_WITH_PAIRED_VERDICTS = ["02_metrics", "03_replacement", "04_stability", "05_sparsity", "07_lora",
                                 "08_ablations"]


@pytest.mark.parametrize("chapter", CHAPTERS_WITH_PAIRED_VERDICTS)
def test_accuracy_verdicts_rest_on_the_evaluation_set_with_paired_intervals(chapter):
    """Verdicts that compare accuracies use >= 2,000 items per model and say so, with paired intervals."""
    from streamline_lib.book.claims import load_chapter_results

    saved = load_chapter_results(ROOT / "notebooks" / "results")[chapter]
    assert saved["numbers"].get("items", 0) >= 2000, f"{chapter}: run it on the book's evaluation set"
    for verdict in saved["verdicts"]:
        text = verdict["ours"] + " " + verdict["why"]
        assert f"{saved['numbers']['items']:,} items" in text, f"{verdict['claim']}: state the item count"
        assert re.search(r"[+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", text) or "paired" in text, \
            f"{verdict['claim']}: show the paired interval"


def test_ledger_page_shows_every_claim():
    nb = json.loads((ROOT / "notebooks" / "11_ledger.ipynb").read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    tables = "".join("".join(o.get("data", {}).get("text/html", "")) for o in outputs)
    for claim in set().union(*CHAPTERS_WITH_VERDICTS.values()):
        assert f">{claim}</td>" in tables, f"the ledger does not show {claim}"
    assert "not yet run" not in "".join("".join(o.get("text", "")) for o in outputs)
