"""A real browser opens the built book: headless Chromium (Debian's package), driven by Playwright.

Playwright is only the driver here; it never downloads a browser of its own. `make test`
installs Chromium first where it can (.ci/ensure-chromium); elsewhere the test fails with
the command that installs it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    pytest.fail("Chromium is not installed; install Debian's package with "
                "`sudo apt-get install -y --no-install-recommends chromium` and re-run")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def offline_page(browser, **options):
    """A new page that can load only the built book's own files, and the list of requests it refused."""
    page = browser.new_page(**options)
    refused: list[str] = []

    def only_files(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_files)
    return page, refused


@pytest.mark.book
def test_formulas_are_typeset_with_the_network_off(browser, html: Path):
    page, refused = offline_page(browser, viewport={"width": 1280, "height": 900})
    page.goto((html / "notebooks" / "04_stability.html").as_uri())
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.document", timeout=20000)
    page.evaluate("() => MathJax.startup.promise")
    typeset = page.locator("mjx-container")
    assert typeset.count() >= 5, f"{typeset.count()} formulas typeset; refused requests: {refused}"
    assert not refused, f"the page asked the network for {refused}"
    text = page.locator("main").inner_text()
    assert "\\frac" not in text and "\\sigma" not in text, "raw TeX is left on the page"
    page.close()


@pytest.mark.book
def test_index_page_renders_the_title_and_chapters(browser, html: Path):
    page = browser.new_page()
    page.goto((html / "index.html").as_uri())
    page.wait_for_url("**/book/intro.html")  # index.html redirects to the introduction
    page.wait_for_load_state()
    assert "Streamlining LLMs" in page.title()
    heading = page.locator("h1").first.inner_text()
    assert "Streamlining LLMs" in heading
    navigation = page.locator("nav.bd-links").inner_text()
    for chapter in ("A tour of the model", "Redundant layers", "Claims ledger"):
        assert chapter in navigation
    page.close()


@pytest.mark.book
def test_chapter_page_shows_its_figures_at_full_size(browser, html: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto((html / "notebooks" / "01_redundancy.html").as_uri())
    assert "Redundant layers" in page.title()
    figures = page.locator(".cell_output img")
    assert figures.count() >= 3
    first = figures.first
    first.scroll_into_view_if_needed()
    natural = first.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    assert natural[0] and natural[1] > 300 and natural[2] > 200, f"the heatmap did not load: {natural}"
    box = first.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 200, f"the heatmap is drawn at {box}"
    # the exercise solutions are folded away until clicked
    assert page.locator(".solution.dropdown, details.solution, .dropdown").count() >= 1
    page.close()


@pytest.mark.book
def test_set_up_code_is_folded_behind_a_toggle_that_opens(browser, html: Path):
    """Imports, parameters, set-up and verdict cells are tagged hide-input: their code is folded away."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto((html / "notebooks" / "01_redundancy.html").as_uri())
    toggles = page.locator("details.hide.above-input")
    assert toggles.count() >= 4, f"{toggles.count()} folded code cells"
    first = toggles.first
    assert first.get_attribute("open") is None, "a folded cell starts closed"
    code = first.locator("pre").first
    assert not code.is_visible()
    first.locator("summary").click()
    assert first.get_attribute("open") is not None and code.is_visible(), "clicking the toggle shows the code"
    page.close()


# each table's right edge, the right edge of what holds it (its scrolling box, or the text column), and
# whether that box scrolls sideways
TABLE_EDGES = """() => [...document.querySelectorAll('main table')].map(table => {
  let box = table.parentElement;
  while (box && !['auto', 'scroll'].includes(getComputedStyle(box).overflowX)) box = box.parentElement;
  const holder = box || document.querySelector('.bd-article');
  return {right: table.getBoundingClientRect().right, limit: holder.getBoundingClientRect().right,
          scrolls: box !== null && box.scrollWidth > box.clientWidth + 1};
})"""


def _chapter_tables(browser, html: Path, width: int) -> dict[str, list[dict]]:
    """Every chapter page's tables, measured at a viewport ``width`` pixels wide."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    tables = {}
    for chapter in sorted((html / "notebooks").glob("*.html")):
        page.goto(chapter.as_uri())
        page.wait_for_load_state()
        tables[chapter.stem] = page.evaluate(TABLE_EDGES)
    page.close()
    return tables


@pytest.mark.book
def test_every_table_fits_the_text_column_at_desktop_width(browser, html: Path):
    tables = _chapter_tables(browser, html, 1280)
    assert sum(map(len, tables.values())) >= 20, "the chapters show their tables"
    wide = {chapter: [round(t["right"] - t["limit"]) for t in found if t["right"] > t["limit"] + 1 or t["scrolls"]]
            for chapter, found in tables.items()}
    assert not {chapter: px for chapter, px in wide.items() if px}, f"tables wider than the column (px): {wide}"


@pytest.mark.book
def test_a_table_wider_than_a_phone_scrolls_inside_the_column(browser, html: Path):
    tables = _chapter_tables(browser, html, 390)
    spilling = {chapter: len([t for t in found if (t["right"] > t["limit"] + 1 and not t["scrolls"])
                              or t["limit"] > 390 + 1]) for chapter, found in tables.items()}
    assert not any(spilling.values()), f"tables that spill out of the page on a phone: {spilling}"
    assert any(t["scrolls"] for found in tables.values() for t in found), "no table needed to scroll: test the test"
