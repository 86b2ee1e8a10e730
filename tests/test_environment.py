"""The set-up files agree with each other: pyproject, Makefile, environment.yml, CI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11's tomllib")

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
    assert "3.11" in SpecifierSet(_pyproject()["project"]["requires-python"])
    pip = next(d for d in deps if isinstance(d, dict))["pip"]
    assert _makefile_torch_pin() in pip, "conda users get the same torch as make setup"
    assert any(d.startswith("-c constraints.txt") for d in pip), "conda users get the versions make setup installs"
    editable = [d for d in pip if d.startswith("-e .")]
    assert editable, "environment.yml installs this package"
    extras = set(re.search(r"\[(.*)\]", editable[0]).group(1).split(","))
    setup_extras = re.search(r'^\$\(STAMP\):.*?-e "\.\[(.*?)\]"', (ROOT / "Makefile").read_text(), re.M | re.S)
    assert setup_extras, "make setup installs the package with its extras"
    assert extras == set(setup_extras.group(1).split(",")), "conda users get the extras make setup installs"
    assert extras <= set(_pyproject()["project"]["optional-dependencies"])


def _requirements() -> list[Requirement]:
    project = _pyproject()["project"]
    return [Requirement(d) for d in project["dependencies"]] + [
        Requirement(d) for extra in project["optional-dependencies"].values() for d in extra]


def _constraints() -> dict[str, str]:
    """constraints.txt as {normalised name: exact version}."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_every_dependency_is_a_range_with_a_lower_bound():
    for requirement in _requirements():
        operators = {spec.operator for spec in requirement.specifier}
        assert operators & {">=", "=="}, f"{requirement}: give the lowest version the tests passed with"
        assert "==" not in operators or requirement.name == "lm-eval", (
            f"{requirement}: a library pins nothing exactly (constraints.txt holds the book's exact versions)")


def test_constraints_pin_every_dependency_within_its_range():
    pins = _constraints()
    for requirement in _requirements():
        name = canonicalize_name(requirement.name)
        if name == "llama-cpp-python":  # compiled on demand by make bench-gguf, not part of the book's set-up
            continue
        assert name in pins, f"constraints.txt has no exact version of {requirement.name}: run make constraints"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}")


def test_the_pinned_torch_build_is_the_constrained_one_and_within_range():
    version = _makefile_torch_pin().split("==")[1]
    assert _constraints()["torch"] == version
    torch_requirement = next(r for r in _requirements() if r.name == "torch")
    assert torch_requirement.specifier.contains(version)


def test_the_pythons_make_tests_are_the_supported_range_s_ends():
    supported = SpecifierSet(_pyproject()["project"]["requires-python"])
    match = re.search(r"^SUPPORTED_PYTHONS\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile names the Pythons make test-pythons runs on"
    tested = match.group(1).split()
    assert all(version in supported for version in tested)
    minors = [f"3.{minor}" for minor in range(8, 20) if f"3.{minor}" in supported]
    assert tested == [minors[0], minors[-1]], f"make test-pythons tests {tested}; the supported range is {minors}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test\n" in ci and "make test-pythons" in ci
