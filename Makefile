# Every target that runs Python depends on `venv`, so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv lint test chaos fleet demo devstack-up devstack-down bench-devstack bench bench-quick \
	bench-memory clean

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

# The chaos suite (issue 5): N mints under every fault kind, then the invariant checker.
# CI runs this small version; the README shows a long run (e.g. CHAOS_MINTS=2000 CHAOS_DURATION=900).
CHAOS_MINTS ?= 40
CHAOS_SEED ?= 1
CHAOS_DURATION ?= 60
CHAOS_WORKERS ?= 1
chaos: venv
	$(BIN)/python -m chaos --mints $(CHAOS_MINTS) --seed $(CHAOS_SEED) \
		--duration $(CHAOS_DURATION) --workers $(CHAOS_WORKERS)

# The fleet on one machine (issue 7): three worker processes, Pinata limited to 60 requests a
# minute, 30 mints, one worker SIGKILLed mid-batch (about 3 minutes).
fleet: venv
	$(BIN)/python -m pytest -m slow tests/test_fleet.py -s

demo: venv
	$(BIN)/python demo.py

devstack-up: venv
	$(BIN)/python -m devstack up --detach

devstack-down: venv
	$(BIN)/python -m devstack down

bench-devstack: venv
	$(BIN)/python -m bench.devstack_figures

# The saga against the engine's own limit (issue 8): bench/results.json and BENCHMARKS.md's table
# (under ten minutes). bench-quick (CI) proves the harness and its numbers' shape, gating on no
# timing; bench-memory is the long one: one worker's RSS over 5,000 mints.
bench: venv
	$(BIN)/python -m bench

bench-quick: venv
	$(BIN)/python -m bench --quick

BENCH_MEMORY_MINTS ?= 5000
bench-memory: venv
	$(BIN)/python -m bench --memory-mints $(BENCH_MEMORY_MINTS) --batch 20 --samples 5 \
		--results bench/results-memory.json \
		--no-markdown

clean:
	rm -rf $(VENV) build *.egg-info
