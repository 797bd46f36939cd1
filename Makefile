# Two entry points a user needs: `make train` and `make test`.
# Both create .venv on first use and install what they need into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch that this machine has on disk; users on a GPU machine
# install the torch build they need (the project accepts torch>=2.4).
TORCH_PIN ?= torch==2.13.0

.PHONY: train test evaluate lint install

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

train: install
	$(VENV)/bin/saimp train $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

evaluate: install
	$(VENV)/bin/saimp evaluate $(ARGS)

lint: install
	$(PY) -m ruff check src tests bench
