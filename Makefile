# Every target bootstraps .venv on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
COVERAGE_FLOOR ?= 90

.PHONY: venv test lint typecheck ci demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/coverage report --fail-under=$(COVERAGE_FLOOR)
	$(BIN)/coverage report --include='workers/*' --fail-under=95

lint: $(STAMP)
	$(BIN)/ruff check threadstore workers tests benchmarks
	$(BIN)/ruff format --check threadstore workers tests benchmarks
	$(BIN)/flake8 threadstore workers tests

typecheck: $(STAMP)
	$(BIN)/mypy

ci: lint typecheck test

demo: $(STAMP)
	$(BIN)/python -m threadstore.demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .coverage .mypy_cache .pytest_cache .ruff_cache build *.egg-info
