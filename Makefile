# make run · make test · make bench — each sets up what it needs, from a fresh Debian 12 machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
SAMPLES := data-samples/generated/small
# Debian packages: the server with PostGIS, GDAL's tools (ogr2ogr, the OAPIF client), QGIS's bindings,
# Chromium for the web map's browser tests.
# The metapackages name the release's own PostgreSQL major (Debian 12: 15, Debian 13: 17).
RUN_PACKAGES := postgresql postgresql-postgis
TEST_PACKAGES := $(RUN_PACKAGES) gdal-bin python3-qgis qgis-providers chromium haproxy

# Python 3.12 or newer: $(PYTHON) if given, else the first that runs among python3.12, python3.13 and
# pyenv's installs (pyenv's shims exist for versions that are not selected, so each is tried, not looked up).
PYTHON ?= $(shell for p in python3.12 python3.13 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -V); do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { command -v $$p || echo $$p; } && break; done)

.PHONY: help run test bench lint lock system-run system-test samples setup serve clean-db

help:
	@echo "make run   set up everything, load the sample layers, serve on http://127.0.0.1:8000"
	@echo "make test  set up everything and run the test suite against a real PostGIS"
	@echo "make bench build the bench-scale city and measure (writes docs/benchmarks.md)"

system-run:
	@.ci/ensure-debian-packages $(RUN_PACKAGES)

system-test:
	@.ci/ensure-debian-packages $(TEST_PACKAGES)

# Every Python package, the extras' too, is pinned with its hashes in requirements.lock, one resolution for
# Python 3.12 and 3.13 (Debian 13's own). After changing a dependency in pyproject.toml, `make lock`
# regenerates it (uv pip compile, also to take newer releases within the bounds); commit both files.
LOCK := requirements.lock

$(BIN)/gis: pyproject.toml $(LOCK)
	@test -n "$(PYTHON)" || { echo "make: Python 3.12 or newer not found: install python3.12 (or set PYTHON=/path/to/python3.12)"; exit 1; }
	@echo "creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv --clear $(VENV)
	@$(BIN)/pip install -qq --upgrade pip
	@$(BIN)/pip install -qq --require-hashes -r $(LOCK)
	@$(BIN)/pip install -qq --no-deps -e .
	@$(BIN)/pip check >/dev/null || { $(BIN)/pip check; echo "make: $(LOCK) does not satisfy pyproject.toml: run make lock"; exit 1; }
	@touch $(BIN)/gis

lock:
	@test -x $(BIN)/uv || { test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV); $(BIN)/pip install -qq uv; }
	@$(BIN)/uv pip compile pyproject.toml --extra test --extra dev --universal --python-version 3.12 \
		--generate-hashes --quiet -o $(LOCK)

$(SAMPLES)/.done: data-samples/generate.py $(wildcard layers/*/*.yml) $(wildcard layers/rasters/*/*.yml) | $(BIN)/gis
	@$(BIN)/python data-samples/generate.py --scale small --out $(SAMPLES)
	@touch $@

samples: $(SAMPLES)/.done

# Start the database, apply migrations, load every layer, publish styles; safe to repeat.
setup: system-run $(BIN)/gis samples
	@$(BIN)/gis db start
	@$(BIN)/gis migrate
	@$(BIN)/gis refresh --all
	@$(BIN)/gis styles publish
	@$(BIN)/gis layers

run: setup
	@$(BIN)/gis serve

# ruff, and mypy --strict over gis/ and services/ (settings in pyproject.toml; pygeoapi's stubs in typings/)
lint: $(BIN)/gis
	@$(BIN)/ruff check .
	@$(BIN)/mypy

test: system-test $(BIN)/gis samples lint
	@$(BIN)/python -m pytest

bench: system-test $(BIN)/gis
	@$(BIN)/python bench/run.py

clean-db:
	@$(BIN)/gis db stop || true
	@rm -rf .gisdata
