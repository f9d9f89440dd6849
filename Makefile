# The two commands of the README:  `make demo` (set up + run the embedded default) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
RUN := source scripts/env.sh && $(VENV)/bin/

.PHONY: setup demo test test-fast lock bench

setup:
	@bash scripts/setup.sh

demo: setup
	@$(RUN)lune run

test: setup
	@$(RUN)python -m pytest -q --timeout=900 --durations=15 $(PYTEST_ARGS)

test-fast: setup
	@$(RUN)python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lock: setup
	@$(VENV)/bin/pip freeze --exclude-editable | grep -v '^torch==' > requirements/lock.txt.new && mv requirements/lock.txt.new requirements/lock.txt
