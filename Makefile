# Entry points. `make map` and `make test` set themselves up; nothing is installed by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
AOI ?=
OUT ?= maps/demo
MAP_ARGS ?=

.PHONY: setup map test test-all bench demo-world weights clean help

help:
	@echo "make map [AOI=region.geojson] [OUT=maps/name] [MAP_ARGS='--source earth-search ...']"
	@echo "make test | make bench | make demo-world | make setup | make clean"

# The venv is rebuilt only when the pinned requirements or the project metadata change,
# so a second `make setup` takes well under a second.
setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

map: setup
	$(BIN)/landcover map $(if $(AOI),$(AOI),--demo) --out $(OUT) $(MAP_ARGS)

test: setup
	$(BIN)/python -m pytest -m "not slow" -q
	$(BIN)/python -m pytest -m slow -q

bench: setup
	$(BIN)/python -m benchmarks

demo-world: setup
	$(BIN)/landcover demo generate

clean:
	rm -rf $(VENV) .pytest_cache .cache
