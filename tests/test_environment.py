"""The set-up files agree with each other: pyproject, Makefile, environment.yml, CI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _makefile_torch_pin() -> str:
    match = re.search(r"^TORCH\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile pins torch in a TORCH variable"
    return match.group(1)


def test_environment_yml_matches_pyproject_and_makefile():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    assert python == "python=3.11"
    assert ">=3.11" in _pyproject()["project"]["requires-python"]
    pip = next(d for d in deps if isinstance(d, dict))["pip"]
    assert _makefile_torch_pin() in pip, "conda users get the same torch as make setup"
    editable = [d for d in pip if d.startswith("-e .")]
    assert editable, "environment.yml installs this package"
    extras = set(re.search(r"\[(.*)\]", editable[0]).group(1).split(","))
    setup_extras = re.search(r'^\$\(STAMP\):.*?-e "\.\[(.*?)\]"', (ROOT / "Makefile").read_text(), re.M | re.S)
    assert setup_extras, "make setup installs the package with its extras"
    assert extras == set(setup_extras.group(1).split(",")), "conda users get the extras make setup installs"
    assert extras <= set(_pyproject()["project"]["optional-dependencies"])


def test_torch_range_in_pyproject_admits_the_pinned_build():
    torch_req = next(d for d in _pyproject()["project"]["dependencies"] if d.startswith("torch"))
    version = _makefile_torch_pin().split("==")[1]
    assert f"<={version}" in torch_req, "a looser range would let pip pull a newer CUDA build"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
