# The two commands: `make demo` (the whole system on the embedded default, demo data included)
# and `make test` (the whole suite). Both install what is missing first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/plugins

.PHONY: install demo down test lint bench

install:
	@bash scripts/install.sh

demo: install
	$(PY) -m customer_pipelines stack up
	$(PY) -m customer_pipelines demo-run

down:
	$(PY) -m customer_pipelines stack down

test: install
	$(VENV)/bin/ruff check plugins dags tests bench
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check plugins dags tests bench
	$(VENV)/bin/ruff format --check plugins dags tests bench
