"""The book builds from the committed notebooks, with -W, and its pages are whole."""

from __future__ import annotations

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
