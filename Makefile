# spiralmix: `make run` trains the reference experiment, `make test` runs the tests.
# Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.13.0 is pinned here only so that a CPU build is installed; pyproject asks for torch>=2.2.
TORCH ?= torch==2.13.0

.PHONY: help venv run sweep compare report test lint bench clean

help:  ## show this help
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/spiralmix-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH) -e '.[dev]'
	touch $@

venv: $(BIN)/spiralmix-installed  ## create .venv and install spiralmix with its dev and sweep extras

run: venv  ## train manifold mixup at the reference settings (seed 123, 100 000 steps)
	$(BIN)/python -m spiralmix regularizer=mixup

compare: venv  ## the six regularizers × 5 seeds, one job per core, with a report
	$(BIN)/python -m spiralmix -m experiment=compare hydra/launcher=joblib

test: venv  ## run the test suite
	$(BIN)/python -m pytest -q

lint: venv  ## ruff check and format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: venv  ## speed and memory against a plain PyTorch loop (see benchmarks/README.md)
	$(BIN)/python benchmarks/run.py

clean:  ## remove .venv and caches (keeps outputs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
