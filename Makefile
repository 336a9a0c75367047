# Entry points. `make map` and `make test` set themselves up; nothing is installed by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
AOI ?=
OUT ?=
MAP_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup map test test-fast bench demo-world weights weights-multiband clean help

help:
	@echo "make map [AOI=region.geojson] [OUT=maps/name] [MAP_ARGS='--source earth-search ...']  (default OUT: maps/demo, or maps/<AOI name>)"
	@echo "make test | make bench | make demo-world | make setup | make clean"

# The venv is rebuilt only when the pinned requirements or the project metadata change,
# so a second `make setup` takes well under a second.
setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip "setuptools>=68" wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

map: setup
	$(BIN)/landcover map $(if $(AOI),$(AOI),--demo) $(if $(OUT),--out $(OUT)) $(MAP_ARGS)

# One pytest run over one worker per core (pytest-xdist), each test file kept on one worker so its
# module fixtures (a demo map, a trained model) are built once: it exits non-zero when a test fails
# or when no test ran at all (exit 5). PYTEST_WORKERS=0 runs the suite in this process.
PYTEST_WORKERS ?= auto
test: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

demo-world: setup
	$(BIN)/landcover demo generate

# Retrain the committed demo weights (small profile, synthetic demo world, CPU, ~10 min).
weights: setup
	$(BIN)/landcover train models/configs/demo.yaml

# Multi-band, multi-label demo weights in the reBEN shape (ten bands, timm, ~5 min on 2 cores).
weights-multiband: setup
	$(BIN)/landcover train models/configs/demo-multiband.yaml

clean:
	rm -rf $(VENV) .pytest_cache .cache
