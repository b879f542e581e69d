# Two commands for a fresh machine: `make run` (main job, embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench fidelity clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/doc-migrate full

test: $(STAMP)
	$(PY) -m pytest -q -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check doc_migration doc_migration_tests scripts benchmarks testkit
	$(VENV)/bin/mypy doc_migration scripts benchmarks testkit

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .doc_migration .pytest_cache

fidelity: $(STAMP)
	$(PY) scripts/fidelity_report.py
