# Heron: every target bootstraps .venv itself from the lock file, so a fresh clone needs nothing else.
PY ?= python3
# pytest-xdist workers: the suite waits on PostgreSQL, subprocesses and sockets as much as on CPU.
TEST_WORKERS ?= 3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup run test lint bench fuzz clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

## Start Heron on the embedded default: SQLite in ./var/heron.db, http://127.0.0.1:8000
run: $(STAMP)
	$(BIN)/heron serve

## Lint, type-check and run the whole suite (SQLite and a throwaway PostgreSQL cluster)
test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

## Run the benchmarks under bench/ and print their figures
bench: $(STAMP)
	$(BIN)/python -m bench

## Fuzz every operation of /api/openapi.json with schemathesis: the suite's bounded run, longer
## (FUZZ_EXAMPLES per operation and mode, invalid path and query parameters too, both databases;
## ~20 minutes per database on 2 cores)
FUZZ_EXAMPLES ?= 100
FUZZ_SEED ?= 13
fuzz: $(STAMP)
	HERON_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) HERON_FUZZ_SEED=$(FUZZ_SEED) HERON_FUZZ_NEGATIVE=all \
	HERON_FUZZ_DATABASES=sqlite,postgresql $(BIN)/python -m pytest -n 0 -s --timeout 0 tests/api/test_fuzz.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
