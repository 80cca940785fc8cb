# Quick start: `make run` serves adminlink on the embedded defaults; `make test` runs the tests.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: run test lint typecheck check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# `make run` installs only what the service needs; the test tools come with `make test`.
$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	touch $@

$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@ $(RUNTIME)

run: $(RUNTIME)
	$(BIN)/adminlink serve

test: $(DEV)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(DEV)
	$(BIN)/ruff check service workers webhooks tests $(wildcard bench)

typecheck: $(DEV)
	$(BIN)/mypy service workers webhooks

check: lint typecheck test

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
