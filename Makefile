# Quick start: `make run` serves adminlink on the embedded defaults; `make test` runs the tests.
# Both create .venv and install what they need on first use, from uv.lock only.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
# uv lives in a venv of its own: `uv sync` keeps .venv exactly as the lock says, uv included.
TOOLS := .venv-tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
LATEST := .venv-latest

# uv uses the Python given here and never downloads one; the project's venv is .venv.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
SYNC := $(UV) sync --locked --python $(PYTHON) --quiet

.PHONY: run test test-latest lint typecheck check lock lock-uv clean fuzz

$(UV): requirements-uv.txt
	rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-uv.txt
	touch $@

# `make run` installs only what the service needs; the test tools come with `make test`.
$(RUNTIME): uv.lock pyproject.toml | $(UV)
	$(SYNC)
	touch $@

$(DEV): uv.lock pyproject.toml | $(UV)
	$(SYNC) --extra dev
	touch $@ $(RUNTIME)

run: $(RUNTIME)
	$(BIN)/adminlink serve

test: $(DEV)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# lint-imports checks the package dependency rules of pyproject.toml's [tool.importlinter].
lint: $(DEV)
	$(BIN)/ruff check service workers webhooks tests bench tools
	$(BIN)/lint-imports

typecheck: $(DEV)
	$(BIN)/mypy service workers webhooks

check: lint typecheck test

# Refresh uv.lock on purpose, to the newest versions that pyproject.toml's ranges allow.
lock: $(UV)
	$(UV) lock --upgrade

# Move uv itself to UV_VERSION (every wheel's hash, for every platform).
lock-uv: $(UV)
	{ echo "# uv itself, every wheel's hash: make installs it with pip --require-hashes, then the rest"; \
	  echo "# from uv.lock. Refresh with: make lock-uv UV_VERSION=x.y.z"; \
	  echo "uv==$(UV_VERSION)" | $(UV) pip compile - --generate-hashes --universal --quiet --no-header; \
	} > requirements-uv.txt.new && mv requirements-uv.txt.new requirements-uv.txt

# An early warning, not part of CI: the suite in a throwaway venv with the newest releases
# that pyproject.toml's ranges allow, ignoring uv.lock. It prints what differs from the lock.
test-latest: $(UV)
	rm -rf $(LATEST)
	$(UV) venv --quiet --python $(PYTHON) $(LATEST)
	$(UV) pip install --quiet --python $(LATEST)/bin/python --upgrade -e '.[dev]'
	@echo "== releases newer than uv.lock =="
	@$(UV) export --quiet --locked --extra dev --no-hashes --no-emit-project --no-header --no-annotate \
		| $(LATEST)/bin/python tools/lock_drift.py
	$(LATEST)/bin/python -m pytest $(PYTEST_ARGS) || { echo "test-latest: the newest allowed releases fail the tests above; uv.lock keeps CI on the locked ones"; exit 1; }

clean:
	rm -rf $(VENV) $(TOOLS) $(LATEST) data .pytest_cache .mypy_cache .ruff_cache

# schemathesis against a running server on PostgreSQL (ADMINLINK_FUZZ_DATABASE_URL, optional
# ADMINLINK_FUZZ_REDIS_URL): every operation, fixed seed, bounded examples. See tests/fuzz/run.py.
fuzz: $(DEV)
	$(BIN)/python tests/fuzz/run.py
