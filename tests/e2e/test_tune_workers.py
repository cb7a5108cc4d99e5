"""``aiprim tune --workers N``: processes sharing one Optuna study on a real PostgreSQL add up their trials."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _aiprim(project, *args, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "AIPRIM_OPTUNA_STORAGE")}
    full_env.update(AIPRIM_HOME=str(project), PREFECT_HOME=str(project / ".prefect"), **env)
    return subprocess.run([sys.executable, "-m", "aiprim.flows.cli", *args], cwd=project, env=full_env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def shared_storage(postgres_server):
    """A fresh database on the test server for this test's studies."""
    import psycopg

    name = f"optuna_{os.getpid()}_{id(object())}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.url(name, "postgresql+psycopg")


@pytest.mark.slow
@pytest.mark.stack  # .ci/run's scale-out step (benchmarks/scale_out.py measures trials per minute with 1 and 2 workers)
def test_two_workers_share_one_study_and_their_trials_add_up(project, balancer_snapshot, shared_storage, monkeypatch,
                                                            capsys):
    import optuna

    from aiprim.flows.cli import main

    result = _aiprim(project, "tune", "balancer", str(balancer_snapshot), "--trials", "4", "--workers", "2",
                     "--profile", "small", "--json", AIPRIM_OPTUNA_STORAGE=shared_storage)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["workers"] == 2 and report["new_trials"] == 4 and report["failed"] == 0
    assert report["complete"] + report["pruned"] == 4
    assert report["numbers"] == [0, 1, 2, 3]  # none lost, none handed out twice
    assert report["best_params"]

    study = optuna.load_study(study_name=report["study"], storage=shared_storage)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.is_finished() and t.state.name != "FAIL" for t in trials)
    # The two processes sampled differently (their samplers are seeded apart), so no trial repeats another.
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4

    # The same command again, from this process (the worker processes are spawned afresh either way; the
    # command's own process only starts them and logs the tune run, which a second interpreter adds nothing to).
    monkeypatch.setenv("AIPRIM_OPTUNA_STORAGE", shared_storage)
    capsys.readouterr()
    assert main(["tune", "balancer", str(balancer_snapshot), "--trials", "3", "--workers", "2", "--profile", "small",
                 "--json"]) == 0, capsys.readouterr().err[-3000:]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["numbers"] == [4, 5, 6]  # the same study, continued


def test_workers_on_sqlite_is_one_clear_error(project, balancer_snapshot, monkeypatch, capsys):
    from aiprim.flows.cli import main

    monkeypatch.delenv("AIPRIM_OPTUNA_STORAGE", raising=False)  # the project's own store: SQLite
    assert main(["tune", "balancer", str(balancer_snapshot), "--workers", "2", "--profile", "small"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "SQLite" in lines[0] and "postgresql://" in lines[0], err
