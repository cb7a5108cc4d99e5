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

# The headline benchmark of each primitive and of both transfer stages (about an hour on 2 cores);
# benchmarks/RESULTS.md gives each one's command, machine and numbers, and the narrower benchmarks beside them.
bench: $(STAMP)
	$(PY) benchmarks/balancer.py
	$(PY) benchmarks/query.py
	$(PY) benchmarks/compiler.py --tasks-per-family 16 --schedules 40
	$(PY) benchmarks/sharder.py
	$(PY) benchmarks/transfer.py --train 16 --held-out 20 --servers 8,120 --max-requests 60000 --kernel-only
	$(PY) benchmarks/sharder_transfer.py --train 8 --held-out 20

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt scripts/setup_venv.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup_venv.sh
	touch $(STAMP)

clean:
	rm -rf mlruns.db mlartifacts optuna.db .prefect checkpoints outputs data/snapshots data/quarantine data/accepted
