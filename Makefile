# The two commands of the quickstart: `make demo` and `make test`.
# Both set up .venv (and Stockfish) on first use; nothing else is needed but Python 3.10+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test setup bench clean

demo: $(STAMP)
	$(BIN)/lmrl-ray demo

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

setup: $(STAMP)

bench: $(STAMP)
	$(BIN)/python benchmarks/env_steps.py
	$(BIN)/python benchmarks/datagen.py
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/learner.py
	$(BIN)/python benchmarks/rollout.py
	$(BIN)/python benchmarks/benchmark_cells.py
	$(BIN)/python benchmarks/simulator.py
	$(BIN)/python benchmarks/scan.py

$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) bash scripts/setup.sh
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
