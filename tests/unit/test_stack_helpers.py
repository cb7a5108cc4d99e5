"""The stack's pieces that need no server: masking secrets, private files, status of no stack, trial shares."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys


def test_mask_hides_every_secret_and_any_url_password():
    from aiprim.flows.stack import mask

    credentials = {"mlflow_username": "admin", "mlflow_password": "s3cr-et_A", "prefect_auth_string": "aiprim:tok/en+1",
                   "postgres_password": "pg pass"}
    line = ("connect postgresql+psycopg://aiprim:pg%20pass@127.0.0.1:5432/optuna failed; auth aiprim:tok/en+1; "
            "token tok/en+1; admin s3cr-et_A; other mysql://root:hunter2@db/x")
    masked = mask(line, credentials)
    for secret in ("s3cr-et_A", "tok/en+1", "pg%20pass", "hunter2"):
        assert secret not in masked
    assert "admin" in masked and "127.0.0.1:5432/optuna" in masked and "root:***@db" in masked


def test_private_files_are_created_owner_only(tmp_path):
    from aiprim.flows.ui import write_private

    path = tmp_path / "secret.json"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "{}"


def test_the_dashboard_of_aiprim_ui_reads_the_studies_storage_and_keeps_it_off_the_command_line(project, monkeypatch):
    """``AIPRIM_OPTUNA_STORAGE`` (what ``aiprim stack up`` exports) is where the studies are, so the dashboard
    of ``aiprim ui --launch`` opens it too; a storage URL may hold a password, so it goes in a private file."""
    import tomllib

    from aiprim.flows import config, ui

    storage = f"sqlite:///{project / 'elsewhere.db'}"
    monkeypatch.setenv("AIPRIM_OPTUNA_STORAGE", storage)
    dashboard = next(s for s in ui.project_servers(config.load()) if s.name == "optuna")
    settings_file = dashboard.command[dashboard.command.index("--from-config") + 1]
    assert storage not in " ".join(dashboard.command)
    assert tomllib.loads(open(settings_file).read())["optuna_dashboard"]["storage"] == storage
    assert stat.S_IMODE(os.stat(settings_file).st_mode) == 0o600


def test_trial_shares_add_up():
    from aiprim.flows.tune_workers import shares

    assert shares(4, 2) == [2, 2]
    assert shares(5, 3) == [2, 2, 1]
    assert shares(1, 2) == [1, 0]
    assert all(sum(shares(t, w)) == t for t in range(0, 12) for w in range(1, 5))


def _aiprim(project, *args):
    return subprocess.run([sys.executable, "-m", "aiprim.flows.cli", *args], cwd=project, capture_output=True, text=True,
                          timeout=120)


def test_status_and_down_without_a_stack(project):
    status = _aiprim(project, "stack", "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout) == {"services": {}}
    assert "not running" in _aiprim(project, "stack", "status").stdout
    down = _aiprim(project, "stack", "down")
    assert down.returncode == 0 and "not running" in down.stdout


def test_a_broken_state_file_is_one_line(project):
    (project / ".stack").mkdir()
    (project / ".stack" / "state.json").write_text("{not json")
    result = _aiprim(project, "stack", "status")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "state.json: not valid JSON" in result.stderr
