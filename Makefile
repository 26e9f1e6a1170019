# Two entry points for a fresh machine with only Python: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torchvision (the data extra) needs the torch build it was compiled against. These pairs install
# from this workplace's disk: x86_64 gets torch 2.14.1 + torchvision 0.29.1 (a CUDA build that runs
# on the CPU; PyPI's torchvision does not import beside the CPU-only torch 2.13.0), aarch64 a CPU
# build of 2.9.1 + 0.24.1. Override both to choose another pair.
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH_VERSION ?= 2.9.1
TORCHVISION_VERSION ?= 0.24.1
else
TORCH_VERSION ?= 2.14.1
TORCHVISION_VERSION ?= 0.29.1
endif

.PHONY: demo test test-all lint typecheck unit unit-all bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch and torchvision first, pinned as a pair, so pip never resolves either to another build
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch, torchvision" 2>/dev/null || \
		$(PY) -m pip install --quiet torch==$(TORCH_VERSION) torchvision==$(TORCHVISION_VERSION)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[data]"
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(VENV)/bin/zoo demo

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/ruff format --check src tests benchmarks tools

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy --strict src tests benchmarks tools

# a new Hypothesis seed each run, printed first so that a failure can be replayed: make unit SEED=...
# The seed also draws the registered names whose real forwards run (tests/draw.py): about 10 names plus one
# per family, whatever the zoo's size; any R = max(12, names / 10) consecutive seeds draw every name, so a CI
# that passes its build number (make test SEED=$BUILD_NUMBER) covers every name every R builds
ifeq ($(origin SEED), undefined)
SEED := $(shell $(PYTHON) -c "import random; print(random.randrange(2**32))")
endif
# two pytest workers (pytest-xdist): the suite is CPU-bound and runs each torch op on one thread, so CI's two
# cores halve its time; WORKERS=0 runs it in one process. A test file is one work unit (conftest.py sets the
# xdist groups), except that the tests of registered names go as a few units of consecutive names, so that
# the every-name tier is shared by both workers
WORKERS ?= 2
PYTEST := $(VENV)/bin/pytest -q -n $(WORKERS) --dist loadgroup --hypothesis-seed=$(SEED) --durations=15
# every registered name on the meta device, the run's drawn names for real (tests/tiers.py)
unit: $(VENV)/.dev
	@echo "hypothesis seed: $(SEED) (replay with: make unit SEED=$(SEED))"
	$(PYTEST)

# every property on every registered name (no draw), for a release or a nightly run
unit-all: $(VENV)/.dev
	@echo "hypothesis seed: $(SEED) (replay with: make unit-all SEED=$(SEED)); every name in every tier"
	$(PYTEST) --all-names

test: lint typecheck unit

test-all: lint typecheck unit-all

bench: $(VENV)/.installed
	$(PY) benchmarks/all.py

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
