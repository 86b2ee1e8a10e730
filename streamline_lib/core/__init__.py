"""Plumbing every other package uses: atomic files, verified cache entries, cached results, progress bars."""
