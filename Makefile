# Two entry points for a fresh machine with only Python: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: demo test lint typecheck unit bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch first, pinned, so pip never resolves it to a multi-GB CUDA build
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e .
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
	$(VENV)/bin/mypy --strict src tests

# a new Hypothesis seed each run, printed first so that a failure can be replayed: make unit SEED=...
ifeq ($(origin SEED), undefined)
SEED := $(shell $(PYTHON) -c "import random; print(random.randrange(2**32))")
endif
unit: $(VENV)/.dev
	@echo "hypothesis seed: $(SEED) (replay with: make unit SEED=$(SEED))"
	$(VENV)/bin/pytest -q --hypothesis-seed=$(SEED)

test: lint typecheck unit

bench: $(VENV)/.installed
	$(PY) benchmarks/import_time.py

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
