"""One project for every UI test of the session, built by the real CLI as cheaply as it can be.

- configs: the shipped ones plus a profile ``ui-test`` (a copy under ``AIPRIM_CONFIG_DIR``; the shipped
  defaults stay as they are): a tiny balancer snapshot, one Optuna trial, a few epochs;
- the UI servers (MLflow, Prefect, optuna-dashboard, through ``aiprim.flows.ui``) start first;
- ``aiprim run`` then talks to that Prefect server (no temporary server of its own): version 1, champion;
  beside it, validation rejects a deliberately bad snapshot (its Data Docs);
- ``aiprim train --trials 0`` on the same snapshot with profile ``ui-test-longer`` (one more epoch): version 2,
  the challenger, which routes differently (the run's one trial is the configured point, so the same
  configuration would train the same balancer), while ``aiprim schedule`` registers the ``retrain``
  deployment with the server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

PROFILE = "ui-test"
# Small enough to train in seconds, big enough that both versions and the peers route distinguishably.
UI_TEST_PROFILE = {
    "balancer": {
        # Skewed keys: the hot-unit table, what the learned balancer adds to the LP-weighted peer, has work to do.
        "source": {"servers": 16, "requests": 12000, "keys": 3000, "zipf_offset": 200, "zipf_exponent": 1.0},
        "train": {"max_epochs": 2, "scenarios_per_epoch": 4, "hot_units": 100},
        "tune": {"trials": 1, "max_epochs": 1},  # one trial: the dashboard's study has a best trial
        "evaluate": {"disruption_trials": 1},
    },
    "pipeline": {"transfer": {"primitives": []}},  # the branch alone: these tests are about the UIs
}
# Version 2's: trained one epoch longer and routed by its kernel alone (no split LP, which would route every
# class as version 1 does), so that it routes differently.
LONGER_PROFILE = "ui-test-longer"
TIMEOUT_S = 600  # per CLI command: a loaded two-core machine is several times slower than an idle one


def _configs_with_test_profile(root: Path) -> Path:
    import shutil

    import yaml

    from aiprim.settings import packaged_configs

    configs = root / "configs"
    shutil.copytree(packaged_configs(), configs)
    pipeline = yaml.safe_load((configs / "pipeline.yaml").read_text())
    pipeline.setdefault("profiles", {})[PROFILE] = UI_TEST_PROFILE
    balancer = UI_TEST_PROFILE["balancer"]
    pipeline["profiles"][LONGER_PROFILE] = {**UI_TEST_PROFILE, "balancer": {
        **balancer, "train": {**balancer["train"], "max_epochs": balancer["train"]["max_epochs"] + 1, "lp_split": False}}}
    (configs / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return configs


def _finished(process: subprocess.Popen, what: str, timeout: float = TIMEOUT_S) -> str:
    """Wait for a CLI process; its stderr, or a failed assertion quoting its tail."""
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{what}: rc={process.returncode}\n{err[-4000:]}"
    return err


def post_json(url: str, body: dict) -> object:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _project_servers(env: dict):
    """The UI servers of ``aiprim ui --launch``, built under the project's environment."""
    from aiprim.flows import config, ui

    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return ui.project_servers(config.load(), "127.0.0.1",
                                  {"mlflow": _free_port(), "prefect": _free_port(), "optuna": _free_port()})
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _wait_for_deployment(serving: subprocess.Popen, log: Path, prefect_api: str, name: str,
                         timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not post_json(prefect_api + "/deployments/filter", {"deployments": {"name": {"any_": [name]}}}):
        if serving.poll() is not None:
            pytest.fail(f"aiprim schedule exited with {serving.returncode} before registering {name!r}:\n"
                        f"{log.read_text()[-3000:]}")
        assert time.monotonic() < deadline, f"no {name!r} deployment after {timeout:.0f} s"
        time.sleep(1)


def _interrupt(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def ui_project(tmp_path_factory, balancer_tables, empty_stores):
    from aiprim.flows import ui
    from tests.conftest import add_empty_stores, write_balancer_snapshot
    from tests.data.edits import edit, set_cell

    home = tmp_path_factory.mktemp("ui-project")
    add_empty_stores(home, empty_stores)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "AIPRIM_CONFIG_DIR")}
    env.update(AIPRIM_HOME=str(home), PREFECT_HOME=str(home / ".prefect"),
               AIPRIM_CONFIG_DIR=str(_configs_with_test_profile(tmp_path_factory.mktemp("ui-configs"))))

    started: list[subprocess.Popen] = []

    def start(*args: str, extra_env: dict | None = None, **streams) -> subprocess.Popen:
        streams = streams or {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
        started.append(subprocess.Popen([sys.executable, "-m", "aiprim.flows.cli", *args], cwd=home,
                                        env={**env, **(extra_env or {})}, text=True, **streams))
        return started[-1]

    # A negative I/O cost: validation rejects the snapshot.
    bad = write_balancer_snapshot(tmp_path_factory.mktemp("bad-telemetry"),
                                  edit(balancer_tables, "requests", set_cell("cost_io", 5, -1.0)))
    try:
        servers = _project_servers(env)
        with ui.RunningServers(servers):
            urls = {s.name: s.url for s in servers}
            prefect = {"PREFECT_API_URL": urls["prefect"] + "/api"}
            running = start("run", "--primitives", "balancer", "--profile", PROFILE, extra_env=prefect)
            rejecting = start("validate", "balancer", str(bad))  # beside the run, which mostly keeps one core busy
            _finished(running, "aiprim run (version 1)")
            snapshot = json.loads((home / "data" / "accepted" / "balancer.json").read_text())["snapshot"]
            training = start("--quiet", "train", "balancer", snapshot, "--trials", "0", "--profile", LONGER_PROFILE)
            serving_log = home / "schedule.log"
            with open(serving_log, "w") as log:
                serving = start("schedule", "--profile", PROFILE, extra_env=prefect, stdout=log, stderr=subprocess.STDOUT)
            try:
                _wait_for_deployment(serving, serving_log, prefect["PREFECT_API_URL"], "retrain")
            finally:
                _interrupt(serving)
            _finished(training, "aiprim train (version 2)")
            rejected_err = rejecting.communicate(timeout=TIMEOUT_S)[1]
            assert rejecting.returncode == 1, rejected_err
            docs = re.search(r"Data Docs: (\S+index\.html)", rejected_err)
            assert docs, rejected_err
            yield {"home": home, "env": env, "urls": urls, "snapshot": snapshot, "data_docs": Path(docs.group(1))}
    finally:
        for process in started:  # after a failure above: nothing of ours outlives the fixture
            if process.poll() is None:
                process.kill()
                process.wait()
