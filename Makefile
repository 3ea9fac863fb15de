# The two commands of the README: `make run` and `make test`.
# Each creates the virtual environment and installs the project on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export CURATORNET_HOME ?= $(CURDIR)/.curatornet_home
export DAGSTER_HOME ?= $(CURATORNET_HOME)/dagster

.PHONY: install system-deps lock stack stack-down run test test-fast test-slow ui lint bench clean-home

# constraints.txt pins every package a clean install resolves to (scripts/lock.sh
# regenerates it), so two installs a week apart get the same versions.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Debian packages the tests need (chromium, postgresql), installed when missing
system-deps:
	scripts/install-system-deps.sh

## regenerate constraints.txt after changing pyproject.toml's dependencies
lock:
	scripts/lock.sh

## run the main job: synthetic demo data if data/ is empty, the whole graph through Dagster
run: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/curatornet run

## every test: fast, slow end-to-end and browser tests
test: $(STAMP) system-deps
	$(PY) -m pytest -q --durations=30

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not browser"

test-slow: $(STAMP) system-deps
	$(PY) -m pytest -q -m "slow or browser"

## Dagster UI on 127.0.0.1:3000 and MLflow UI on 127.0.0.1:5000
ui: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/curatornet ui

## the production-shaped stack on 127.0.0.1 (PostgreSQL, MLflow server, Dagster daemon
## and webserver, Dask workers; docs/scaling.md); stack-down stops it and keeps the data
stack: $(STAMP) system-deps
	$(VENV)/bin/curatornet stack up

stack-down: $(STAMP)
	$(VENV)/bin/curatornet stack down

## the speed benchmarks (figures and ratios; see docs/benchmarks.md)
bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check curatornet_pipeline tests benchmarks
	$(VENV)/bin/ruff format --check curatornet_pipeline tests benchmarks

clean-home:
	rm -rf $(CURATORNET_HOME)
