# Quick start: `make run` serves adminlink on the embedded defaults; `make test` runs the tests.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/adminlink serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check service workers webhooks tests $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy service workers webhooks

check: lint typecheck test

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
