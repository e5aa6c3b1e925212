# Two commands matter: `make run` (serve with embedded defaults) and `make test` (every test).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# This checkout's code first, also in Ray workers and subprocesses (a shared venv may point elsewhere).
export PYTHONPATH := $(CURDIR)

.PHONY: run test lint setup migrate web loadtest clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)
	@if [ -f web/package.json ]; then $(MAKE) web; fi

web:
	cd web && npm ci --no-audit --no-fund && npm run build

migrate: setup
	$(BIN)/essaycoach migrate --dev

run: setup
	$(BIN)/essaycoach run --dev

# Seconds, before the tests: style (ruff), import layers db <- actors <- serve_app (import-linter),
# types (mypy: strict on actors/ and db/); configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

test: setup lint
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)
	@if [ -f web/package.json ]; then cd web && npm test; fi

loadtest: setup
	$(BIN)/python -m ops.loadtest.run

clean:
	rm -rf $(VENV) var
