"""Serve MathJax from the book's own ``_static`` folder, so that its formulas render offline.

Sphinx loads MathJax 3 from a CDN by default; without a network every formula shows as raw TeX.
The PyPI package ``django-static-mathjax`` carries MathJax 3.2.2's browser build (its ``es5``
folder; the package needs no Django to be read from). At the end of an HTML build this copies
that folder to ``_static/mathjax``, where ``mathjax_path`` in ``_config.yml`` points. We chose it
over ``jupyter-server-mathjax`` (MathJax 2.7), whose configuration Sphinx and MyST no longer write.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mathjax  # the import name of django-static-mathjax
from sphinx.application import Sphinx

MATHJAX_FILES = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    """Copy MathJax's files into the built HTML's ``_static/mathjax``."""
    if exception is None and app.builder.format == "html":
        shutil.copytree(MATHJAX_FILES, Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True)


def setup(app: Sphinx) -> dict:
    if not (MATHJAX_FILES / "tex-mml-chtml.js").is_file():
        raise RuntimeError(f"MathJax's files are not at {MATHJAX_FILES}: reinstall the book extra "
                           "(pip install -e '.[book]'), which brings django-static-mathjax")
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
