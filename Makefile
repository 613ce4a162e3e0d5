# spiralmix: `make run` trains the reference experiment, `make test` runs the tests.
# Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.13.0 is pinned here only so that a CPU build is installed; pyproject asks for torch>=2.2.
TORCH ?= torch==2.13.0

# The lowest pytorch-lightning, hydra-core and omegaconf that pyproject allows ("name>=X" → "name==X").
FLOORS = $(shell $(PYTHON) -c "import re,tomllib; deps=tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']; print(' '.join(re.sub(r'>=([^,]+).*', r'==\\1', d) for d in deps if d.split('>')[0] in ('pytorch-lightning','hydra-core','omegaconf')))")
# What the floor run needs: everything that touches Lightning's or Hydra's API.
FLOOR_TESTS := tests/test_compat.py tests/test_module.py tests/test_train.py tests/test_config.py \
	"tests/test_cli.py::test_a_short_run_logs_everything[mixup]"

.PHONY: help venv run sweep compare report test test-slow test-floor lint bench clean

help:  ## show this help
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/spiralmix-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH) -e '.[dev]'
	touch $@

venv: $(BIN)/spiralmix-installed  ## create .venv and install spiralmix with its dev and sweep extras

run: venv  ## train manifold mixup at the reference settings (seed 123, 100 000 steps)
	$(BIN)/python -m spiralmix regularizer=mixup

compare: venv  ## the six regularizers × 10 seeds, one job per core, with a report
	$(BIN)/python -m spiralmix -m experiment=compare hydra/launcher=joblib

# Two workers; a module's expensive fixture stays on one of them (xdist_group).
PYTEST := -m pytest -q -n 2 --dist loadgroup

test: venv  ## the test suite on two workers, without the long tier (what CI runs)
	$(BIN)/python $(PYTEST) -m "not slow"

test-slow: venv  ## the long tier: the wheel, sweeps' faults and launchers, more data sets exact
	$(BIN)/python $(PYTEST) -m slow

# .venv-floor sees .venv's packages behind its own (a .pth file), so pip installs only the
# floors over them and not torch again; pip resolves the floors' own requirements as usual.
test-floor: venv  ## the API tests in .venv-floor, on the lowest dependency versions pyproject allows
	rm -rf .venv-floor && $(PYTHON) -m venv .venv-floor
	echo "import site; site.addsitedir('$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')')" \
		> "$$(.venv-floor/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/spiralmix-venv.pth"
	.venv-floor/bin/pip install --quiet $(TORCH) $(FLOORS) -e . pytest pytest-xdist hypothesis
	.venv-floor/bin/python -c "import importlib.metadata as m; print(*(f'{p} {m.version(p)}' for p in ('pytorch-lightning', 'hydra-core', 'omegaconf')), sep='\n')"
	.venv-floor/bin/python $(PYTEST) $(FLOOR_TESTS)

lint: venv  ## ruff check and format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: venv  ## speed and memory against a plain PyTorch loop (see benchmarks/README.md)
	$(BIN)/python benchmarks/run.py

clean:  ## remove .venv and caches (keeps outputs/)
	rm -rf $(VENV) .venv-floor build dist .pytest_cache .ruff_cache .hypothesis
