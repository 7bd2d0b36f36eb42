# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SCALE  ?= 1

.PHONY: install demo test journey spark soak lint format dev bench bench-streams bench-cdc lock clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,spark]'
	@touch $(STAMP)

install: $(STAMP)

## Create the virtualenv if missing, drop the demo files and run the main job end to end.
demo: $(STAMP)
	$(BIN)/medallion demo --scale $(SCALE)

## Lint, format check and the whole test suite (real DuckDB files, real subprocesses).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -m "not journey and not spark_job"

## The README's journey walked end to end, a second demo on one home (minutes; CI runs it).
journey: $(STAMP)
	$(BIN)/pytest -m journey

## medallion_job on the Spark engine (local[2]), killed mid-write and rerun, equal to DuckDB's
## tables (minutes: a JVM per Dagster step; CI runs it). Needs Java 17+.
spark: $(STAMP)
	$(BIN)/pytest -m spark_job

## Fault soak: every source and sync killed at many more seeded points than `make test` does
## (medallion_platform_tests/faults); FAULT_TRIALS=40 per source, from FAULT_SEED=1000.
FAULT_TRIALS ?= 40
FAULT_SEED   ?= 1000
soak: $(STAMP)
	MEDALLION_FAULT_TRIALS=$(FAULT_TRIALS) MEDALLION_FAULT_SEED=$(FAULT_SEED) \
		$(BIN)/pytest medallion_platform_tests/faults -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## The Dagster UI and daemon (sensors) on the platform home.
dev: $(STAMP)
	$(BIN)/medallion dev

## File-ingestion benchmark (see bench/README.md); BENCH_ROWS=5000000 by default.
bench: $(STAMP)
	$(BIN)/python bench/bench_files.py $(if $(BENCH_ROWS),--rows $(BENCH_ROWS),)

## Event-stream benchmark, Kafka (Tansu) → silver (see bench/README.md); BENCH_EVENTS=5000000 by default.
bench-streams: $(STAMP)
	$(BIN)/python bench/bench_streams.py $(if $(BENCH_EVENTS),--events $(BENCH_EVENTS),)

## CDC benchmark, PostgreSQL (logical decoding) → silver (see bench/README.md); BENCH_CUSTOMERS=50000 by default.
bench-cdc: $(STAMP)
	$(BIN)/python bench/bench_cdc.py $(if $(BENCH_CUSTOMERS),--customers $(BENCH_CUSTOMERS),)

## Re-pin constraints.txt from what the virtualenv resolved.
lock: $(STAMP)
	@( echo "# Exact versions CI tested (pip install -c constraints.txt -e '.[dev,spark]'); regenerate with"; \
	   echo "# 'make lock' after changing dependencies in pyproject.toml."; \
	   $(BIN)/python -m pip list --format=freeze --exclude-editable | grep -vE '^(medallion|pip|setuptools|wheel)[_=-]' ) > constraints.txt

clean:
	rm -rf $(VENV) .medallion .pytest_cache .ruff_cache
