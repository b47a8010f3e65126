# `make run`: set everything up (first time only), then run the benchmark on the bundled dataset.
# `make test`: set up if needed, then run the test suite.
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.installed
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(VENV)/bin/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(VENV)/bin/python)

OUTPUT ?= results
ARGS ?=
PYTEST_ARGS ?= --durations=40

.PHONY: run test setup clean

run: $(STAMP)
	$(VENV)/bin/spark-retrieval benchmark --output $(OUTPUT) $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): setup.py constraints.txt scripts/setup.sh scripts/install_system_packages.sh scripts/install_horovod.sh
	bash scripts/setup.sh

clean:
	rm -rf $(VENV) build *.egg-info $(OUTPUT)
