# `make test` and `make book` are all a newcomer needs; both set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.detrlib-installed
export PYTHONUNBUFFERED := 1
# Notebook kernels import detrlib from this checkout, whatever the virtualenv's editable install points at.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: setup test unit notebooks book book-clean sync help

help:
	@echo "make test   unit tests + every notebook under nbval (smoke profile) + the book build and browser checks"
	@echo "make book   execute every chapter in the quick profile (cached), build the site into _build/html and"
	@echo "            check its pages; fails naming each chapter that did not execute or does not read cleanly"
	@echo "make sync   re-pair notebooks/*.ipynb with their MyST twins in book/ (jupytext) and strip outputs;"
	@echo "            copy _config.yml's repository url and branch into the badges, install cells and detrlib"

$(STAMP): requirements.txt pyproject.toml scripts/bootstrap.sh
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/bootstrap.sh

setup: $(STAMP)

# Two pytest processes side by side (pytest-xdist), one OpenMP thread each (conftest.py): both cores busy.
# A test file (its fixtures), or a notebook (its kernel), runs whole in one process, handed out in conftest.py's
# order (slow files first) rather than xdist's (most tests first). PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2

test: $(STAMP)
	@bash scripts/install_chromium.sh
	@DETRLIB_PROFILE=smoke $(PY) -m pytest notebooks tests --nbval-lax --nbval-current-env \
		-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS) \
		--nbval-cell-timeout=600 -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): the test paths are wrong"; fi; \
	exit $$rc

unit: $(STAMP)
	DETRLIB_PROFILE=smoke $(PY) -m pytest tests -m "not slow" -p no:cacheprovider

notebooks: $(STAMP)
	DETRLIB_PROFILE=smoke $(PY) -m pytest notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

# The chapters' runs live in _build/runs. scripts/build_book.py forgets stale executions, builds, checks every
# page, and fails naming each page that did not execute or does not read cleanly.
book: $(STAMP)
	DETRLIB_PROFILE=quick DETRLIB_STATIC_WIDGETS=1 TQDM_DISABLE=1 DETRLIB_RUNS=$(CURDIR)/_build/runs $(PY) scripts/build_book.py

book-clean:
	rm -rf _build

sync: $(STAMP)
	$(PY) scripts/sync_repository.py
	$(PY) -c "from detrlib.results import write_index; write_index('results')"
	$(VENV)/bin/jupytext --sync notebooks/*.ipynb
	$(PY) scripts/clean_notebooks.py notebooks/*.ipynb
