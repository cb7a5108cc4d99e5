"""``aiprim stack up|status|down``: the real services, authenticated, with a pipeline run against them.

One stack for the module (starting it takes tens of seconds on two cores); the tests run in order and the
last one stops it and checks that nothing it started is left. Marked ``stack``: `.ci/run` runs them in
their own step (`pytest -m stack`), `make test` leaves them out.

After the runs of the stack's own project, a second project (``scale``: tiny profiles in a config folder
of its own, the stack's client environment) puts the stack under faults and load: the MLflow server
killed during a run and restarted by ``aiprim stack up``, the branches in Dask worker processes,
and concurrent rounds on one study.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
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


# --- what the branches share across processes (no stack needed) ------------------------------------------------

def test_a_profile_chooses_the_task_runner():
    from aiprim.flows import config
    from aiprim.flows.retrain import task_runner

    small, dask = config.load("small"), config.load("small-dask")
    assert small["prefect"]["task_runner"] == "threads"
    assert dask["prefect"]["task_runner"] == "dask" and dask["prefect"]["max_workers"] == 2
    assert dask["primitive_configs"] == small["primitive_configs"]  # the small profile's primitives, on Dask
    runner = task_runner(dask)
    assert type(runner).__name__ == "DaskTaskRunner"
    assert runner.cluster_kwargs["host"] == "127.0.0.1" and runner.cluster_kwargs["n_workers"] == 2


def test_the_machine_lock_holds_across_processes(tmp_path, monkeypatch):
    """Dask and Ray branches are processes: a timed step in one keeps the others' steps out (flock, not a thread lock)."""
    from aiprim.flows._machine import machine_lock

    monkeypatch.setenv("AIPRIM_HOME", str(tmp_path))
    monkeypatch.setenv("AIPRIM_MACHINE_DIR", str(tmp_path / "machine"))
    code = ("from aiprim.flows._machine import machine_lock\nprint('waiting', flush=True)\n"
            "with machine_lock(False):\n    print('in', flush=True)\n")
    with machine_lock(exclusive=True):
        other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        assert other.stdout.readline() == "waiting\n"
        time.sleep(1.0)
        assert other.poll() is None  # still outside: the measurement holds the machine
    assert other.stdout.readline() == "in\n"
    assert other.wait(timeout=60) == 0


# --- faults and load: a second project on the same stack --------------------------------------------------------

TINY = "stack-tiny"
# Small enough that a round is mostly process start-up and store traffic, which is what these tests are about.
TINY_PROFILE = {
    "balancer": {"source": {"servers": 16, "requests": 12000, "keys": 3000, "zipf_offset": 200},
                 "train": {"max_epochs": 2, "scenarios_per_epoch": 4, "hot_units": 100},
                 "tune": {"trials": 1, "max_epochs": 1}, "evaluate": {"disruption_trials": 1}},
    "sharder": {"source": {"warehouses": 4, "customers_per_district": 10, "catalogue_items": 100, "transactions": 4000,
                           "shards": 4},
                "train": {"max_epochs": 2, "steps_per_epoch": 4, "txns_per_step": 512},
                "tune": {"trials": 1, "max_epochs": 1}, "evaluate": {"disruption_trials": 1}},
    "pipeline": {"transfer": {"primitives": []}},  # the branches alone
}
# The load test's rounds train the balancer one epoch less: a study name of their own (it hashes the training
# config), so the trials counted are exactly theirs.
LOAD_PROFILE = {**TINY_PROFILE, "balancer": {**TINY_PROFILE["balancer"],
                                             "train": {**TINY_PROFILE["balancer"]["train"], "max_epochs": 1}}}
CONCURRENT_ROUNDS = int(os.environ.get("AIPRIM_STACK_ROUNDS", "3"))  # the 8: AIPRIM_STACK_ROUNDS=8 (minutes more)


@pytest.fixture(scope="module")
def scale(stack, tmp_path_factory):
    """A second project on the stack: its own folder, the tiny profiles in a config folder of its own, the stack's
    client environment, and one snapshot per primitive that every run here reads (no drift between draws)."""
    import shutil

    import yaml

    from aiprim.settings import packaged_configs

    stack_home, _ = stack
    configs = tmp_path_factory.mktemp("scale-configs") / "configs"
    shutil.copytree(packaged_configs(), configs)
    pipeline = yaml.safe_load((configs / "pipeline.yaml").read_text())
    pipeline["profiles"].update({
        TINY: TINY_PROFILE, f"{TINY}-load": LOAD_PROFILE,
        f"{TINY}-dask": {**TINY_PROFILE, "pipeline": {**TINY_PROFILE["pipeline"],
                                                  "prefect": {"task_runner": "dask", "max_workers": 2}}},
    })
    (configs / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    env = {**_read_env_file(stack_home / ".stack" / "stack.env"), "AIPRIM_CONFIG_DIR": str(configs)}
    project = tmp_path_factory.mktemp("scale-project")
    sources = project / "sources"
    for name in ("balancer", "sharder"):
        made = _aiprim(project, "snapshot", name, "--to", str(sources / name), "--profile", TINY, extra_env=env)
        assert made.returncode == 0, made.stderr[-3000:]
    return project, env, sources


def _start(home: Path, *args: str, extra_env: dict, **streams) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
    env.update(AIPRIM_HOME=str(home), PREFECT_HOME=str(home / ".prefect"), **extra_env)
    return subprocess.Popen([sys.executable, "-m", "aiprim.flows.cli", *args], cwd=home, env=env, text=True,
                            **(streams or {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}))


@contextmanager
def _registry(env: dict):
    """An MLflow client of the stack (its credentials in this process's environment while it is used)."""
    from mlflow import MlflowClient

    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: env[name] for name in names})
    try:
        yield MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"], registry_uri=env["MLFLOW_TRACKING_URI"])
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _versions(client, primitive: str) -> list[int]:
    return sorted(int(v.version) for v in client.search_model_versions(f"name='aiprim-{primitive}'"))


def _champion(client, primitive: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(f"aiprim-{primitive}", "champion").version
    except MlflowException:
        return None


def _train_runs_since(client, primitive: str, since_ms: int) -> list:
    experiment = client.get_experiment_by_name(f"aiprim-{primitive}")
    return client.search_runs([experiment.experiment_id],
                              f"tags.`aiprim.step` = 'train' and attributes.start_time >= {since_ms}")


def test_killing_mlflow_fails_the_run_in_one_line_and_promotes_nothing(stack, scale):
    """The MLflow server killed mid-run: the run fails with one line naming it and leaves the registry as it was;
    `aiprim stack up` restarts the server alone. The next run, on the restarted server, is the Dask test's."""
    stack_home, _ = stack
    project, env, sources = scale
    with _registry(env) as client:
        versions, champion = _versions(client, "balancer"), _champion(client, "balancer")
    before = _status(stack_home)["services"]
    # MLflow's client retries a refused connection 7 times, backing off for minutes: once is enough to fail here.
    impatient = {**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    run = _start(project, "run", "--primitives", "balancer", "--profile", TINY, "--source", str(sources),
                 extra_env=impatient, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: list[str] = []
    validated = threading.Event()

    def read() -> None:
        for line in run.stderr:
            lines.append(line)
            if re.search(r"balancer: snapshot \S+ valid in", line):
                validated.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert validated.wait(600), "".join(lines)[-3000:]
    os.killpg(before["mlflow"]["pid"], signal.SIGKILL)  # the server and its workers, mid-run
    run.wait(timeout=600)
    reader.join(30)
    err = "".join(lines)
    assert run.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("aiprim: error:")]
    assert len(errors) == 1, err[-3000:]
    assert "MLflow tracking server" in errors[0] and env["MLFLOW_TRACKING_URI"] in errors[0], errors[0]
    assert not _status(stack_home)["services"]["mlflow"]["alive"]

    # `up` restarts what is down, on the same port (the clients' environment stays valid), and only that.
    again = _aiprim(stack_home, "stack", "up")
    assert again.returncode == 0, again.stderr[-3000:]
    after = _status(stack_home)["services"]
    assert all(service["alive"] for service in after.values())
    assert after["mlflow"]["pid"] != before["mlflow"]["pid"] and after["mlflow"]["url"] == before["mlflow"]["url"]
    assert {n: s["pid"] for n, s in after.items() if n != "mlflow"} == {n: s["pid"] for n, s in before.items() if n != "mlflow"}
    with _registry(env) as client:
        assert _versions(client, "balancer") == versions  # nothing registered ...
        assert _champion(client, "balancer") == champion  # ... nothing promoted


def test_the_branches_run_in_dask_worker_processes(scale):
    """Each primitive's branch in a Dask worker process of its own, none the flow's; their results (dicts) come
    back. After the test before, this is also the next run on the restarted MLflow server.

    The Ray runner is not started here: Ray's servers listen on every interface (README, "Scale out")."""
    project, env, sources = scale
    since = int(time.time() * 1000)
    run = _start(project, "run", "--primitives", "balancer,sharder", "--profile", f"{TINY}-dask",
                 "--source", str(sources), extra_env=env)
    out, err = run.communicate(timeout=900)
    assert run.returncode == 0, err[-4000:]
    assert "Traceback" not in err, err[-4000:]
    for name in ("balancer", "sharder"):  # the summary holds each branch's version: the dict came back
        assert re.search(rf"^{name} .* v\d+ (promoted|kept challenger)$", out, re.M), out

    with _registry(env) as client:
        trained = {name: _train_runs_since(client, name, since) for name in ("balancer", "sharder")}
    assert all(len(runs) == 1 and runs[0].info.status == "FINISHED" for runs in trained.values()), trained
    pids = {name: int(runs[0].data.tags["aiprim.process"].rsplit(":", 1)[1]) for name, runs in trained.items()}
    assert len(set(pids.values())) == 2, pids
    assert run.pid not in pids.values(), (run.pid, pids)
    deadline = time.monotonic() + 60  # the workers were the flow's: they end with it
    while any(_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in pids.values()), pids


def test_concurrent_rounds_on_one_study_lose_nothing(scale, tmp_path):
    """Rounds started together against one MLflow server and one Optuna study: every round's run, trials and
    version are there afterwards, numbered without gaps, and the primitive has one champion."""
    import optuna

    project, env, sources = scale
    profile = f"{TINY}-load"
    storage = env["AIPRIM_OPTUNA_STORAGE"]
    # Imported once first, as an earlier round would have: rounds that start together all find the copy.
    imported = _aiprim(project, "snapshot", "balancer", "--source", str(sources / "balancer"), "--profile", profile,
                       extra_env=env)
    assert imported.returncode == 0, imported.stderr[-3000:]
    studies_before = set(optuna.get_all_study_names(storage=storage))
    with _registry(env) as client:
        versions = _versions(client, "balancer")
    since = int(time.time() * 1000)
    logs = [tmp_path / f"round-{i}.log" for i in range(CONCURRENT_ROUNDS)]
    rounds = []
    for log in logs:
        with open(log, "w") as handle:
            rounds.append(_start(project, "run", "--primitives", "balancer", "--profile", profile, "--source", str(sources),
                                 extra_env=env, stdout=subprocess.DEVNULL, stderr=handle))
    for process in rounds:
        process.wait(timeout=1800)
    errs = [log.read_text() for log in logs]
    for process, err in zip(rounds, errs):
        assert process.returncode == 0, err[-4000:]

    first = max(versions, default=0) + 1
    with _registry(env) as client:
        now = _versions(client, "balancer")
        assert now == versions + list(range(first, first + CONCURRENT_ROUNDS))  # no version lost, none twice
        runs = _train_runs_since(client, "balancer", since)
        assert len(runs) == CONCURRENT_ROUNDS and all(r.info.status == "FINISHED" for r in runs)
        assert {client.get_model_version("aiprim-balancer", str(v)).run_id for v in now[len(versions):]} == \
            {r.info.run_id for r in runs}  # each round's version is its own run's model
        for version in now[len(versions):]:  # every round decided, under the project's model lock
            assert "aiprim.decision" in client.get_model_version("aiprim-balancer", str(version)).tags
        champion = _champion(client, "balancer")
        history = json.loads(client.get_registered_model("aiprim-balancer").tags["aiprim.champion_history"])
    assert champion is not None and history[-1] == champion  # one champion, the one its history ends with

    new_studies = set(optuna.get_all_study_names(storage=storage)) - studies_before
    assert len(new_studies) == 1, new_studies  # the rounds shared one study
    trials = optuna.load_study(study_name=new_studies.pop(), storage=storage).trials
    reported = sum(int(n) for err in errs for n in re.findall(r"balancer: tuned (\d+) new trials", err))
    assert [t.number for t in trials] == list(range(len(trials)))
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    assert len(trials) == reported >= 1  # every trial a round ran is in the study, and nothing else


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
