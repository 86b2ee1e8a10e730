"""How long each chapter takes in the workshop profile on this machine, from what a workshop attendee has.

An attendee has run ``make warm-up`` (``streamline assets``): the bundled models and data
are in the cache and converted. Nothing else is cached: no evaluation, no distance, no
trained replacement. For each chapter this script makes a fresh cache folder whose asset
folders link to the warmed cache, runs the chapter top to bottom with papermill in the
``workshop`` profile (its results go to ``notebooks/runs/``, never over the book's; the
executed copy goes to a temporary folder and is deleted), and prints its wall-clock time
against the workshop target of 5 minutes a chapter.

``--in-order`` runs the chapters one after the other on one such cache instead, as a
workshop does: a chapter then reuses what the earlier ones cached (chapter 5 gets the
models of chapter 4 back, for example). ``--threads`` sets the torch threads of each run
(default: every core, as on a laptop with nothing else running).

Usage: ``.venv/bin/python benchmarks/workshop_times.py [--chapters 00_tour,01_redundancy] [--in-order]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from streamline_lib.data.assets import CACHE_ENV, cache_dir

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
ASSET_FOLDERS = ("wheels", "files", "folders", "models")  # what streamline assets fills; the rest is computed
TARGET_MINUTES = 5.0


def has_workshop_profile(notebook: Path) -> bool:
    """Whether the chapter's parameters cell offers ``PROFILE`` (every chapter in the book's current layout)."""
    cells = json.loads(notebook.read_text())["cells"]
    return any("parameters" in c["metadata"].get("tags", []) and "PROFILE = " in "".join(c["source"])
               for c in cells if "injected-parameters" not in c["metadata"].get("tags", []))


def cold_cache(folder: Path, warmed: Path) -> Path:
    """A cache folder holding only links to ``warmed``'s asset folders."""
    folder.mkdir(parents=True)
    for name in ASSET_FOLDERS:
        if (warmed / name).is_dir():
            (folder / name).symlink_to(warmed / name, target_is_directory=True)
    return folder


def run_chapter(notebook: Path, cache: Path, threads: int, output: Path) -> float:
    """Seconds to execute ``notebook`` in the workshop profile with ``cache`` as the cache folder."""
    env = os.environ | {CACHE_ENV: str(cache), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                        "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "papermill", "-k", "python3", "-p", "PROFILE", "workshop",
                           str(notebook), str(output)], cwd=NOTEBOOKS, env=env, text=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode:
        raise SystemExit(f"{notebook.name} failed in the workshop profile:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def slowest_cells(executed: Path, count: int = 3) -> str:
    """The ``count`` slowest code cells of an executed notebook: seconds and first line (papermill records both)."""
    cells = [c for c in json.loads(executed.read_text())["cells"] if c["cell_type"] == "code"]
    timed = sorted(((c["metadata"].get("papermill", {}).get("duration") or 0.0, "".join(c["source"]).split("\n")[0])
                    for c in cells), reverse=True)[:count]
    return "; ".join(f"{seconds:.0f} s: {line[:50]}" for seconds, line in timed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapters", help="comma-separated notebook stems (default: every chapter with PROFILE)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per run")
    parser.add_argument("--in-order", action="store_true", help="one cache for all chapters, run in order")
    args = parser.parse_args()
    if args.chapters:
        notebooks = [NOTEBOOKS / f"{stem}.ipynb" for stem in args.chapters.split(",")]
        missing = [str(n) for n in notebooks if not n.exists()]
        if missing:
            parser.error(f"no such chapter: {', '.join(missing)}; the chapters are notebooks/NN_name.ipynb")
    else:
        notebooks = [n for n in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) if has_workshop_profile(n)]
    warmed = cache_dir()
    print(f"warming the assets in {warmed} (streamline assets) ...", flush=True)
    warm_up = subprocess.run([sys.executable, "-m", "streamline_lib.cli", "assets"], capture_output=True, text=True)
    if warm_up.returncode:
        raise SystemExit(f"streamline assets failed:\n{warm_up.stderr[-3000:]}")
    print(f"{len(notebooks)} chapters, workshop profile, {args.threads} threads, "
          f"{'one cache in order' if args.in_order else 'a cold cache each'}, {os.cpu_count()} cores\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="workshop-times-") as scratch:
        shared = cold_cache(Path(scratch) / "cache", warmed) if args.in_order else None
        for i, notebook in enumerate(notebooks):
            cache = shared or cold_cache(Path(scratch) / f"cache-{i}", warmed)
            executed = Path(scratch) / notebook.name
            seconds = run_chapter(notebook, cache, args.threads, executed)
            rows.append((notebook.stem, seconds))
            flag = "" if seconds <= TARGET_MINUTES * 60 else f"  over the {TARGET_MINUTES:.0f}-minute target"
            print(f"{notebook.stem:16s} {seconds / 60:5.1f} min{flag}\n    slowest cells: {slowest_cells(executed)}",
                  flush=True)
    total = sum(seconds for _, seconds in rows)
    over = [stem for stem, seconds in rows if seconds > TARGET_MINUTES * 60]
    print(f"\nin all {total / 60:.1f} min; longest {max(s for _, s in rows) / 60:.1f} min; "
          f"{len(over)} of {len(rows)} over {TARGET_MINUTES:.0f} minutes{': ' + ', '.join(over) if over else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
