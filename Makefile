# Every target bootstraps .venv on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
COVERAGE_FLOOR ?= 90

.PHONY: venv bench-venv test soak lint typecheck ci demo bench bench-smoke bench-peers clean test-integrations

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench-venv: $(BENCH_STAMP)

test: $(STAMP)
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest -m 'not soak' $(PYTEST_ARGS)
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report --fail-under=$(COVERAGE_FLOOR)
	$(BIN)/coverage report --include='workers/*' --fail-under=95

# Long randomized crash/fault trials (seeded; the seed is printed for replay).
soak: $(STAMP)
	$(BIN)/python -m pytest -m soak $(PYTEST_ARGS)

# The OpenAI Agents SDK's own session tests against ThreadstoreSession: fetches the pinned
# sdist and pytest-asyncio into a temporary directory (nothing is kept), prints deselections.
test-integrations: $(STAMP)
	$(BIN)/python tests/integrations/openai_agents_sdk_suite.py

lint: $(STAMP)
	$(BIN)/ruff check threadstore workers tests benchmarks examples
	$(BIN)/ruff format --check threadstore workers tests benchmarks examples
	$(BIN)/flake8 threadstore workers tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

ci: lint typecheck test bench-smoke

demo: $(STAMP)
	$(BIN)/python -m threadstore.demo $(DEMO_ARGS)

# Benchmarks: figures as ratios against a baseline run in the same process.
bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks --smoke --no-plot --no-save

# The stores users pick today, in their own pinned virtual environment (out of CI).
bench-peers: $(STAMP)
	$(BIN)/python -m benchmarks.peers $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .coverage .mypy_cache .pytest_cache .ruff_cache build *.egg-info
