# Every target that runs Python depends on `venv`, so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv lock lint typecheck test chaos fleet demo devstack-up devstack-down bench-devstack bench \
	bench-quick bench-memory clean

venv: $(STAMP)

# Installs are locked (docs/dependencies.md): the venv gets exactly the versions in
# requirements/dev.lock, each file checked against its hash (pip itself and the build backend
# included), then the project, editable, with no dependency of its own (all are in the lock)
# and no build isolation (the locked setuptools builds it). pip check fails when the lock no
# longer satisfies pyproject.toml: `make lock`. Re-installs when either changes.
DEV_LOCK := requirements/dev.lock
RUNTIME_LOCK := requirements/runtime.lock
$(STAMP): pyproject.toml $(DEV_LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@touch $(STAMP)

# Refreshes both locks from pyproject.toml (the dependencies, the test and devstack extras) and
# requirements/*.in, with uv in a venv of its own (.venv-lock). Keeps every pin it can;
# `make lock UPGRADE=1` moves everything to the newest versions the ranges allow. The runtime
# lock (deploy/Dockerfile) is resolved under the dev lock, so the versions they share agree.
UV_VERSION := 0.13.9
UV := .venv-lock/bin/uv
LOCK := $(UV) --no-config pip compile --quiet --universal --python-version 3.11 \
	--generate-hashes --no-strip-extras --custom-compile-command "make lock"$(if $(UPGRADE), --upgrade)
lock:
	@$(UV) --version 2>/dev/null | grep -qxF "uv $(UV_VERSION)" || { \
		$(PYTHON) -m venv .venv-lock \
		&& .venv-lock/bin/python -m pip install --quiet "uv==$(UV_VERSION)"; }
	$(LOCK) --extra test pyproject.toml requirements/dev.in -o $(DEV_LOCK)
	$(LOCK) pyproject.toml requirements/build.in -c $(DEV_LOCK) -o $(RUNTIME_LOCK)

test: venv lint typecheck
	$(BIN)/python -m pytest -m "not slow and not chaos"

# mypy, strict, over src/mintsaga ([tool.mypy] in pyproject.toml says what and why).
typecheck: venv
	$(BIN)/python -m mypy

lint: venv
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

# The chaos suite (issue 5): N mints under every fault kind, then the invariant checker.
# CI runs this small version; docs/testing.md shows a long run (e.g. CHAOS_MINTS=2000 CHAOS_DURATION=900).
CHAOS_MINTS ?= 40
CHAOS_SEED ?= 1
CHAOS_DURATION ?= 60
CHAOS_WORKERS ?= 1
chaos: venv
	$(BIN)/python -m chaos --mints $(CHAOS_MINTS) --seed $(CHAOS_SEED) \
		--duration $(CHAOS_DURATION) --workers $(CHAOS_WORKERS)

# The fleet on one machine (issue 7): three worker processes, Pinata limited to 60 requests a
# minute, 30 mints, one worker SIGKILLed mid-batch (about 3 minutes); and Pinata's free plan
# (issue 16): 60 mints started within a minute on two workers told only the plan, no 429 and no
# testAuthentication per mint (about 4 minutes).
fleet: venv
	$(BIN)/python -m pytest -m slow tests/integration/test_fleet.py \
		tests/integration/test_pinata_free_plan.py -s

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
	rm -rf $(VENV) .venv-lock build *.egg-info src/*.egg-info
