# The two commands of the README. Each creates .venv when missing and installs the
# project into it (editable, with the dev extra), then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --out out

# One pytest worker per core, at most 4 (pytest-xdist): most tests wait on
# single-threaded XLA compilation, so one process leaves cores idle (2 cores:
# 520 s with two workers against 752 s with one). --dist loadgroup keeps the
# tests that share one demo run (tests/conftest.py: demo_fast_run) on one worker.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadgroup --durations=15

lint: $(STAMP)
	$(BIN)/ruff check .

benchmark: $(STAMP)
	$(BIN)/python scripts/benchmark.py gmm

clean:
	rm -rf out .pytest_cache
