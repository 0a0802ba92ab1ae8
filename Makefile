# coverid: `make run` runs the whole pipeline, `make test` the test suite.
# Both create or refresh .venv when it is missing or the pins changed.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PINS_HASH := $(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.stamp-$(PINS_HASH)-$(GPU)
export PATH := $(abspath $(BIN)):$(PATH)
PARAM = $(shell $(BIN)/python -c "import yaml; print(yaml.safe_load(open('params.yaml'))$(1))")

.PHONY: help venv run test test-fast ui dashboard bench clean-venv

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

venv: $(STAMP)  ## create or refresh .venv (GPU build of TensorFlow when nvidia-smi answers)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt tinysoundfont==0.3.7  # pyproject.toml says why
	@if [ "$(GPU)" = gpu ]; then \
		echo "NVIDIA GPU found: installing tensorflow[and-cuda]"; \
		$(BIN)/python -m pip install -q -c constraints.txt 'tensorflow[and-cuda]==2.21.0'; \
	fi
	@rm -f $(VENV)/.stamp-* && touch $@

run: $(STAMP)  ## run the whole pipeline (dvc repro) on params.yaml's data source
	@test -d .dvc || $(BIN)/dvc init -q
	$(BIN)/dvc repro

# Test files run in TEST_WORKERS processes (pytest-xdist), a file's tests in one of them (its
# module fixtures are built once); the slow files go first (tests/conftest.py) so that the
# end-to-end pipeline runs beside the rest instead of after it. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test: $(STAMP)  ## run the test suite (slow end-to-end checks in a small configuration)
	$(PYTEST)

test-fast: $(STAMP)  ## the test suite without the slow end-to-end checks
	$(PYTEST) -m "not slow"

bench: $(STAMP)  ## run the benchmarks in benchmarks/ (figures printed and written to reports/bench/)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

UI_PORT ?= 5000

ui: $(STAMP)  ## serve the MLflow UI on the project's tracking database (prints the runs page's address)
	@$(BIN)/python -c "from coverid.core.config import load_params; from coverid.core.tracking import ui_url; \
		print('MLflow UI, the coverid runs: ' + ui_url(load_params(), $(UI_PORT)))"
	$(BIN)/mlflow ui --backend-store-uri "$(call PARAM,['mlflow']['tracking_uri'])" --port $(UI_PORT)

dashboard: $(STAMP)  ## serve optuna-dashboard on the threshold study's database
	$(BIN)/optuna-dashboard "$(call PARAM,['tune']['storage'])" --port 8080

clean-venv:  ## remove the virtual environment
	rm -rf $(VENV)
