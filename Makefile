# OpenMaker: `make run` starts the platform, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench setup clean

$(STAMP): requirements.txt requirements-dev.txt runners/requirements.txt serving/requirements.txt \
		serving/runtimes/torchserve/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -r serving/requirements.txt
	$(BIN)/pip install --quiet --no-deps -r serving/runtimes/torchserve/requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/openmaker up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy app.py chalicelib openmaker runners bench
	$(BIN)/mypy serving  # apart: bench/serving.py and the serving package share a name

test: lint typecheck
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

bench: $(STAMP)
	$(BIN)/python bench/control_plane.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
