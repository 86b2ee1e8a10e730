# The README's commands. Set-up is shared and skipped when already done:
# the venv is rebuilt only when pyproject.toml changes.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
LLAMA_STAMP := $(VENV)/.llama-installed
TORCH  := torch==2.13.0
LEDGER := notebooks/11_ledger.ipynb
CHAPTERS := $(filter-out $(LEDGER),$(sort $(wildcard notebooks/*.ipynb)))
# chapters 1-6 also run on the second bundled model; the ledger shows both models side by side
SECOND_MODEL := gemma3-270m
SECOND_MODEL_CHAPTERS := 00_tour 01_redundancy 02_metrics 03_replacement 04_stability 05_sparsity
BOOK_HTML := book/_build/html

.PHONY: setup book notebooks second-model html test bench bench-gguf lab clean

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
	@for nb in $(CHAPTERS); do \
	  echo "== executing $$nb"; \
	  TQDM_DISABLE=1 $(BIN)/papermill -k python3 --cwd notebooks -p SMOKE False "$$nb" "$$nb" || exit 1; \
	done
	$(MAKE) second-model
	TQDM_DISABLE=1 $(BIN)/papermill -k python3 --cwd notebooks -p SMOKE False $(LEDGER) $(LEDGER)

## second-model: chapters 1-6 on Gemma-3-270M: executed copies in notebooks/gemma3-270m/,
## verdicts in notebooks/results/gemma3-270m/ (the ledger's second column)
second-model: $(STAMP)
	@mkdir -p notebooks/$(SECOND_MODEL)
	@for ch in $(SECOND_MODEL_CHAPTERS); do \
	  echo "== executing notebooks/$$ch.ipynb on $(SECOND_MODEL)"; \
	  TQDM_DISABLE=1 $(BIN)/papermill -k python3 --cwd notebooks -p SMOKE False -p MODEL $(SECOND_MODEL) \
	    -p RESULTS_DIR results/$(SECOND_MODEL) "notebooks/$$ch.ipynb" "notebooks/$(SECOND_MODEL)/$$ch.ipynb" || exit 1; \
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

## bench-gguf: a pruned SmolLM2 as a GGUF file: size, agreement and decoding speed in transformers and llama.cpp
bench-gguf: $(LLAMA_STAMP)
	TQDM_DISABLE=1 $(BIN)/python benchmarks/gguf_export.py $(BENCH_ARGS)

# llama-cpp-python compiles llama.cpp (cmake and a C++ compiler); without them the benchmark runs without it
$(LLAMA_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[llama]" || \
	  echo "llama-cpp-python did not install (it compiles llama.cpp: cmake and a C++ compiler are needed); the benchmark leaves llama.cpp out"
	touch $(LLAMA_STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf book/_build
