# The two commands of the README. Each sets up .venv by itself first
# (idempotent: skipped while pyproject.toml and constraints.txt are unchanged).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.aiprim-installed

.PHONY: run test setup clean bench

run: $(STAMP)
	$(VENV)/bin/aiprim run

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/balancer.py
	$(PY) benchmarks/query.py
	$(PY) benchmarks/compiler.py

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/setup_venv.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup_venv.sh
	touch $(STAMP)

clean:
	rm -rf mlruns.db mlartifacts optuna.db .prefect checkpoints outputs data/snapshots data/quarantine data/accepted
