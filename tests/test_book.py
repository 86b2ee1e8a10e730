"""The book builds from the committed notebooks, with -W, and its pages are whole."""

from __future__ import annotations

import importlib
import pkgutil
import posixpath
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.book
def test_every_chapter_page_exists_with_figures(html):
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = html / "notebooks" / f"{notebook.stem}.html"
        assert page.exists(), f"missing page for {notebook.name}"
        images = re.findall(r'<img[^>]+src="([^"]+\.png)"', page.read_text())
        assert images, f"{page.name} shows no figure"
        for src in images:
            image = (page.parent / src).resolve()
            assert image.exists() and image.stat().st_size > 1000, f"empty or missing image {src}"


@pytest.mark.book
def test_the_chapters_are_numbered_1_to_12_in_the_sidebar_in_file_order(html):
    """One numbering: the sidebar numbers the chapters as the introduction does (file 00 is chapter 1)."""
    sidebar = (html / "notebooks" / "01_redundancy.html").read_text()
    numbered = re.findall(r'href="(\d\d_\w+)\.html">(\d+)\. ', sidebar)
    stems = [notebook.stem for notebook in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    assert [stem for stem, _ in numbered] == stems[:1] + stems[2:], "every chapter but the page itself is linked"
    assert all(int(number) == stems.index(stem) + 1 for stem, number in numbered)


@pytest.mark.book
def test_no_page_shows_a_traceback(html):
    for page in html.rglob("*.html"):
        text = page.read_text()
        assert "Traceback (most recent call last)" not in text, page
        assert "output traceback" not in text, page


@pytest.mark.book
def test_internal_links_resolve(html):
    for page in html.rglob("*.html"):
        for href in re.findall(r'href="([^"#:]+\.html)(?:#[^"]*)?"', page.read_text()):
            assert (page.parent / href).resolve().exists(), f"{page.name} links to missing {href}"


def _library_modules() -> dict:
    """Every module of streamline_lib by name, without the old flat paths (shims that alias a moved module)."""
    import streamline_lib

    modules = {"streamline_lib": streamline_lib}
    for info in pkgutil.walk_packages(streamline_lib.__path__, "streamline_lib."):
        module = importlib.import_module(info.name)
        if module.__name__ == info.name:  # a shim's module is the moved one, under its new name
            modules[info.name] = module
    return modules


def _public_names(name: str, module) -> list[str]:
    """A module's ``__all__``, or without one, the public names it defines itself."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [n for n, value in vars(module).items() if not n.startswith("_") and getattr(value, "__module__", None) == name]


@pytest.mark.book
def test_api_reference_documents_every_public_module(html):
    from sphinx.util.inventory import InventoryFile

    with open(html / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", posixpath.join)
    modules = _library_modules()
    assert set(inventory["py:module"]) == set(modules), "the API pages document other modules than the library has"
    documented = {name for kind, entries in inventory.items() if kind.startswith("py:") for name in entries}
    leaves = {name: module for name, module in modules.items() if not hasattr(module, "__path__")}
    for name, module in modules.items():
        for member in _public_names(name, module):
            if name in leaves:
                assert f"{name}.{member}" in documented, f"{name}.{member} is not documented"
                continue
            # a package re-exports: its page lists the name, linked to the module that defines it
            value = getattr(module, member)
            home = next(leaf for leaf, m in leaves.items() if member in _public_names(leaf, m) and getattr(m, member) is value)
            page = (html / inventory["py:module"][name][2].split("#")[0]).read_text()
            assert f'#{home}.{member}"' in page, f"the page of {name} does not link {member} to {home}"


@pytest.mark.book
def test_api_reference_page_links_its_cross_references(html):
    api = html / "book" / "api"
    assert 'href="api/index.html"' in (html / "book" / "intro.html").read_text(), "the API page is not in the toc"
    pages = {page.name: page.read_text() for page in api.glob("*.html")}
    for page, name in [("pipeline.html", "streamline_lib.pipeline.compress.compress"),
                       ("pipeline.html", "streamline_lib.pipeline.recipe.Recipe"),
                       ("export.html", "streamline_lib.export.checkpoint.save_pruned"),
                       ("models.html", "streamline_lib.models.loading.load_model"),
                       ("methods.html", "streamline_lib.methods.scoring.score_blocks")]:
        assert f'<dt class="sig sig-object py" id="{name}">' in pages[page], f"{page} does not document {name}"
    # load_model's docstring names save_pruned: a link to where save_pruned is documented, on another page
    models = pages["models.html"]
    start = models.index('id="streamline_lib.models.loading.load_model"')
    load_model = models[start:models.find('id="streamline_lib.', start + 1)]
    assert '<a class="reference internal" href="export.html#streamline_lib.export.checkpoint.save_pruned"' in load_model
    # and the library's own docstring, the API page's introduction, links each package to its page
    assert 'href="methods.html#module-streamline_lib.methods"' in pages["index.html"]
