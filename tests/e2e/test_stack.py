"""``aiprim stack up|status|down``: the real services, authenticated, with a pipeline run against them.

One stack for the module (starting it takes tens of seconds on two cores); the tests run in order and the
last one stops it and checks that nothing it started is left. Marked ``stack``: `.ci/run` runs them in
their own step (`pytest -m stack`), `make test` leaves them out.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

CLIENT_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_URL",
                    "PREFECT_API_AUTH_STRING", "AIPRIM_OPTUNA_STORAGE", "AIPRIM_CONFIG_DIR")


def _aiprim(home: Path, *args: str, extra_env: dict | None = None, timeout: int = 600):
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
    env.update(AIPRIM_HOME=str(home), PREFECT_HOME=str(home / ".prefect"), **(extra_env or {}))
    return subprocess.run([sys.executable, "-m", "aiprim.flows.cli", *args], cwd=home, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _read_env_file(path: Path) -> dict:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = shlex.split(value)[0]
    return values


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("stack")
    started = _aiprim(home, "stack", "up")
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        yield home, started
    finally:
        _aiprim(home, "stack", "down", "--purge", timeout=180)  # whatever a failed test left, and the cluster


def _status(home: Path) -> dict:
    result = _aiprim(home, "stack", "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_status_lists_every_service_alive(stack):
    home, _ = stack
    services = _status(home)["services"]
    assert set(services) == {"postgres", "mlflow", "prefect", "prefect_worker", "optuna_dashboard"}
    for name, service in services.items():
        assert service["alive"] and _alive(service["pid"]), name
        assert Path(service["log"]).is_file(), name
        assert set(service) >= {"url", "pid", "log", "auth"}
    assert services["mlflow"]["url"].startswith("http://127.0.0.1:")
    assert services["prefect"]["url"].startswith("http://127.0.0.1:")


def test_a_second_up_says_so(stack):
    home, _ = stack
    again = _aiprim(home, "stack", "up")
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [again.stderr.strip()] and "already up" in again.stderr


def test_credentials_are_private_and_never_printed(stack):
    home, started = stack
    credentials = json.loads((home / ".stack" / "credentials.json").read_text())
    for name in ("credentials.json", "stack.env"):
        assert stat.S_IMODE((home / ".stack" / name).stat().st_mode) == 0o600, name
    secrets = [v for k, v in credentials.items() if not k.endswith("username")]
    printed = started.stdout + started.stderr + _aiprim(home, "stack", "status").stdout
    logs = "".join(p.read_text(errors="replace") for p in (home / ".stack" / "logs").glob("*.log"))
    for secret in secrets:
        for part in {secret, secret.split(":", 1)[-1]}:
            assert part not in printed and part not in logs


def _request(url: str, auth: str | None = None) -> int:
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_unauthenticated_requests_are_refused(stack):
    home, _ = stack
    env = _read_env_file(home / ".stack" / "stack.env")
    mlflow_api = env["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _request(mlflow_api) == 401
    assert _request(mlflow_api, f"{env['MLFLOW_TRACKING_USERNAME']}:wrong") == 401
    assert _request(mlflow_api, f"{env['MLFLOW_TRACKING_USERNAME']}:{env['MLFLOW_TRACKING_PASSWORD']}") == 200
    prefect_api = env["PREFECT_API_URL"] + "/admin/version"
    assert _request(prefect_api) == 401
    assert _request(prefect_api, "aiprim:wrong") == 401
    assert _request(prefect_api, env["PREFECT_API_AUTH_STRING"]) == 200


def test_a_run_against_the_stack_lands_in_its_stores(stack):
    home, _ = stack
    env = _read_env_file(home / ".stack" / "stack.env")
    run = _aiprim(home, "run", "--primitives", "balancer", "--profile", "small", extra_env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]

    from mlflow import MlflowClient

    os.environ.update(MLFLOW_TRACKING_USERNAME=env["MLFLOW_TRACKING_USERNAME"],
                      MLFLOW_TRACKING_PASSWORD=env["MLFLOW_TRACKING_PASSWORD"])
    try:
        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
        versions = client.search_model_versions("name='aiprim-balancer'")
        assert [v.version for v in versions] == ["1"]
        assert client.get_model_version_by_alias("aiprim-balancer", "champion").version == "1"
        run_info = client.get_run(versions[0].run_id).info
        assert run_info.status == "FINISHED"
        assert run_info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server, not a local path
        assert any((home / ".stack" / "mlartifacts").rglob("MLmodel"))
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
    assert not (home / "mlruns.db").exists()  # nothing went to the embedded store

    import optuna

    studies = optuna.get_all_study_names(storage=env["AIPRIM_OPTUNA_STORAGE"])
    assert any(name.startswith("balancer-") for name in studies)

    flow_runs = _prefect_flow_runs(env)
    assert "COMPLETED" in {r["state_type"] for r in flow_runs}


def _prefect_flow_runs(env: dict) -> list[dict]:
    import base64
    import urllib.request

    request = urllib.request.Request(env["PREFECT_API_URL"] + "/flow_runs/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Basic " +
                                              base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode()})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_the_retrain_flow_runs_on_the_worker(stack):
    home, _ = stack
    env = _read_env_file(home / ".stack" / "stack.env")
    # The first run's snapshot again: a newly drawn small one may drift past the validation's bound.
    snapshot = next((home / "data" / "snapshots" / "balancer").iterdir())
    result = _aiprim(home, "stack", "run", "--primitives", "balancer", "--profile", "small", "--source", str(snapshot),
                     timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout)
    assert summary["state"] == "COMPLETED" and summary["work_pool"] == "aiprim-process"

    runs = {r["id"]: r for r in _prefect_flow_runs(env)}
    run = runs[summary["flow_run"]]
    assert run["deployment_id"] and run["work_pool_name"] == "aiprim-process"
    # Run by a process the worker started (it records the pid), which logged the registration in the worker's log.
    assert run["infrastructure_pid"]
    worker_log = Path(_status(home)["services"]["prefect_worker"]["log"]).read_text()
    assert "aiprim-balancer" in worker_log

    from mlflow import MlflowClient

    os.environ.update(MLFLOW_TRACKING_USERNAME=env["MLFLOW_TRACKING_USERNAME"],
                      MLFLOW_TRACKING_PASSWORD=env["MLFLOW_TRACKING_PASSWORD"])
    try:
        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
        assert sorted(v.version for v in client.search_model_versions("name='aiprim-balancer'")) == ["1", "2"]
    finally:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)


def test_down_stops_exactly_what_up_started(stack):
    home, _ = stack
    services = _status(home)["services"]
    sessions = {name: s["pid"] for name, s in services.items()}
    members_before = {pid for pid in _session_members(set(sessions.values()))}
    assert members_before >= set(sessions.values())

    down = _aiprim(home, "stack", "down", timeout=180)
    assert down.returncode == 0, down.stderr
    assert not _session_members(set(sessions.values())), "a process of the stack outlived `down`"
    assert _status(home)["services"] == {}
    assert not (home / ".stack" / "stack.env").exists()
    assert "not running" in _aiprim(home, "stack", "down").stdout


def _session_members(sessions: set[int]) -> set[int]:
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            fields = text.rsplit(")", 1)[1].split()
            if int(fields[3]) in sessions and fields[0] not in ("Z", "X"):
                members.add(int(entry.name))
    return members
