# Two entry points, both from a fresh clone:
#   make bench   set up, then run the main job on the built-in default (no checkpoint, no GPU)
#   make test    set up (with the test and scale extras: pytest, import-linter, Ray), then run the test suite
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; a bare "torch" would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup bench test clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)" -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)" -e ".[test,scale]"
	touch $@

bench: setup
	$(BIN)/sfc-deploy bench

test: $(VENV)/.installed-test
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) build
