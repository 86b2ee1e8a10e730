"""The package's layout, read from its source with ``ast``: no module uses another's private names, and no import cycle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "streamline_lib"


def _modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``root``, by dotted name (a package by its own name, for its __init__)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, type_checking: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (functions included); those under ``if TYPE_CHECKING:`` only if asked."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_checking:
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), type_checking)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node, type_checking)


def _source_module(node: ast.ImportFrom, importer: str, is_package: bool, package: str) -> str | None:
    """The dotted module a ``from ... import`` reads from, or None when it is not part of ``package``."""
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        name = ".".join([*base, *([node.module] if node.module else [])])
    else:
        name = node.module or ""
    return name if name == package or name.startswith(package + ".") else None


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` that importing it runs, imports under ``if TYPE_CHECKING:`` left out.

    ``from .x import y`` is an edge to ``x``, or to ``x.y`` when ``y`` is a submodule;
    ``import a.b.c`` one to ``a.b.c``. Importing a module first runs the ``__init__`` of
    every package above it, so those are edges too, except the importer's own packages,
    which are already being imported when it runs.
    """
    modules = _modules(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path)), type_checking=False):
            if isinstance(node, ast.ImportFrom):
                source = _source_module(node, name, is_package, package)
                if source is not None:
                    targets.update(f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                                   for a in node.names)
            else:
                targets.update(a.name for a in node.names if a.name == package or a.name.startswith(package + "."))
        edges = set()
        for target in targets:
            parts = target.split(".")
            parents = {".".join(parts[:i]) for i in range(1, len(parts))}
            edges |= {target} | {p for p in parents if not (name == p or name.startswith(p + "."))}
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None when it has none."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def private_imports(root: Path, package: str) -> list[str]:
    """``file:line imports name`` for every underscore-prefixed name a module of ``package`` imports from another."""
    offences = []
    for name, path in _modules(root, package).items():
        for node in _imports(ast.parse(path.read_text(), str(path)), type_checking=True):
            if isinstance(node, ast.ImportFrom):
                if _source_module(node, name, path.name == "__init__.py", package) is None:
                    continue
                names = [a.name for a in node.names]
            else:
                names = [a.name for a in node.names if a.name.startswith(package + ".")]
            offences += [f"{path.relative_to(root)}:{node.lineno} imports {n}" for n in names
                         if any(part.startswith("_") and not part.startswith("__") for part in n.split("."))]
    return offences


def test_no_module_imports_another_modules_private_names():
    """A helper two modules share is public in one place (e.g. ``architecture.layers.check_block``), not ``_name``."""
    offences = private_imports(ROOT, PACKAGE)
    assert not offences, "make the helper public in one module and import that:\n" + "\n".join(offences)


def test_the_package_has_no_import_cycle():
    graph = import_graph(ROOT, PACKAGE)
    assert "streamline_lib.methods.pruning" in graph["streamline_lib.methods.costs"]  # the graph sees the imports
    assert graph["streamline_lib.registry"] == set(), "the registry imports nothing of ours, so anything may read it"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_cycle_check_sees_package_inits_and_ignores_type_checking(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a/__init__.py": "from .x import f\n",
        "pkg/a/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..b.y import g\n",
        "pkg/b/__init__.py": "",
        "pkg/b/y.py": "def g():\n    from ..a import x\n",  # a function's import is an import too
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.b.y"] == {"pkg.a", "pkg.a.x"} and graph["pkg.a.x"] == set()
    assert find_cycle(graph) is None
    (tmp_path / "pkg/a/x.py").write_text("from ..b import y\n")  # x -> b.y -> a (its __init__ imports x)
    assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg.a", "pkg.a.x", "pkg.b.y", "pkg.a"]


def test_the_private_import_check_sees_every_form(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from .a import __version__\n",  # dunders are not private
        "pkg/a.py": "__version__ = '1'\ndef _helper(): pass\n",
        "pkg/b.py": "import os._x\nfrom os import _exit\nfrom .a import _helper\n",  # only the last is ours
        "pkg/c/__init__.py": "",
        "pkg/c/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import _helper\n"
                      "def f():\n    import pkg._private\n",
    })
    assert private_imports(tmp_path, "pkg") == [
        "pkg/b.py:3 imports _helper", "pkg/c/d.py:3 imports _helper", "pkg/c/d.py:5 imports pkg._private"]
