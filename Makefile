# Every target that runs Python depends on `venv`, so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv lint test demo devstack-up devstack-down bench-devstack clean

venv: $(STAMP)

# Re-install when the dependency list changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

test: venv lint
	$(BIN)/python -m pytest -m "not slow and not chaos"

lint: venv
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

demo: venv
	$(BIN)/python demo.py

devstack-up: venv
	$(BIN)/python -m devstack up --detach

devstack-down: venv
	$(BIN)/python -m devstack down

bench-devstack: venv
	$(BIN)/python -m bench.devstack_figures

clean:
	rm -rf $(VENV) build *.egg-info
