# The README's commands. Set-up is shared and skipped when already done:
# the venv is rebuilt only when pyproject.toml changes.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
TORCH  := torch==2.13.0
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
BOOK_HTML := book/_build/html

.PHONY: setup book notebooks html test bench lab clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	# torch first and pinned: the CPU build; a bare "torch" would pull a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[book,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## book: execute every notebook with its full (default) parameters, then build the HTML book
book: notebooks html

notebooks: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
	  echo "== executing $$nb"; \
	  TQDM_DISABLE=1 $(BIN)/papermill -k python3 --cwd notebooks -p SMOKE False "$$nb" "$$nb" || exit 1; \
	done

html: $(STAMP)
	$(BIN)/jupyter-book build . --config book/_config.yml --toc book/_toc.yml --path-output book -W --keep-going
	@echo "The book is at $(CURDIR)/$(BOOK_HTML)/index.html"

## test: the whole pytest suite (unit, integration on the bundled model, notebook smoke runs, book build,
## and the book in a headless browser: Debian's Chromium, installed first when missing and possible)
test: $(STAMP)
	@sh .ci/ensure-chromium
	$(BIN)/python -m pytest

## bench: speed and agreement of the zero-shot scorers (packed, whole requests, lm-evaluation-harness);
## options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--limit 10 --tasks arc_easy,piqa"
bench: $(BENCH_STAMP)
	TQDM_DISABLE=1 $(BIN)/python benchmarks/scorer_speed.py $(BENCH_ARGS)

# the bench extra (lm-eval) on top of the set-up, installed once
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[bench]"
	touch $(BENCH_STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf book/_build
