# The two commands of the README:  `make demo` (set up + run the embedded default) and `make test`.
# Developers: `make lint` (what CI checks before the tests) and `make format` (rewrites files).
SHELL := /bin/bash
VENV ?= .venv
RUN := source scripts/env.sh && $(VENV)/bin/

.PHONY: setup demo test test-fast lint format lock bench bench-demo

setup:
	@bash scripts/setup.sh

demo: setup
	@$(RUN)lune run

test: setup
	@$(RUN)python -m pytest -q --timeout=900 --durations=15 $(PYTEST_ARGS)

test-fast: setup
	@$(RUN)python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: setup
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Safe fixes first (imports sorted, old syntax), then the layout; what is left, `make lint` reports.
format: setup
	@$(VENV)/bin/ruff check --fix-only . && $(VENV)/bin/ruff format .

lock: setup
	@$(VENV)/bin/pip freeze --exclude-editable | grep -v '^torch==' > requirements/lock.txt.new && mv requirements/lock.txt.new requirements/lock.txt

# The embedded default from empty, 3 times: min / median / max per stage, load and CPU flags
# (bench/demo.py; BENCH_ARGS="--runs 5", "--short" to check the harness, "--dry-run").
bench-demo: setup
	@$(RUN)python bench/demo.py $(BENCH_ARGS)
