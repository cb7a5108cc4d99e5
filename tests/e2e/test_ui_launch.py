"""``aiprim ui --launch`` starts MLflow, Prefect and optuna-dashboard on 127.0.0.1, and on SIGTERM stops
every process they started (MLflow's workers, Prefect's API), leaving no orphan."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import psutil
import pytest

pytestmark = pytest.mark.slow

STARTUP_S = 240


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lines(stream, sink: queue.Queue) -> None:
    for line in stream:
        sink.put(line)
    sink.put(None)


def _sessions_of_children(pid: int) -> set[int]:
    return {os.getsid(child.pid) for child in psutil.Process(pid).children()}


def _live_members(sessions: set[int]) -> list[psutil.Process]:
    alive = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(proc.pid) in sessions:
                alive.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return alive


def test_launch_serves_three_uis_and_sigterm_leaves_no_orphans(tmp_path):
    ports = {"mlflow": free_port(), "prefect": free_port(), "optuna": free_port()}
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "AIPRIM_CONFIG_DIR")}
    env.update(AIPRIM_HOME=str(tmp_path), PREFECT_HOME=str(tmp_path / ".prefect"))
    command = [sys.executable, "-m", "aiprim.flows.cli", "ui", "--launch", "--mlflow-port", str(ports["mlflow"]),
               "--prefect-port", str(ports["prefect"]), "--optuna-port", str(ports["optuna"])]
    launcher = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(launcher.stdout, output), daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + STARTUP_S
        while not any("Ctrl-C stops them" in line for line in seen):
            line = output.get(timeout=max(1.0, deadline - time.monotonic()))
            assert line is not None, "aiprim ui --launch exited:\n" + "".join(seen)
            seen.append(line)
        urls = {line.split(":", 1)[0]: line.split(None, 1)[1].strip() for line in seen if line.startswith(("mlflow:", "prefect:", "optuna:"))}
        assert urls == {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}, seen
        for path in ("http://127.0.0.1:{mlflow}/health", "http://127.0.0.1:{prefect}/api/health", "http://127.0.0.1:{optuna}/api/meta"):
            with urllib.request.urlopen(path.format(**ports), timeout=10) as response:
                assert response.status == 200

        sessions = _sessions_of_children(launcher.pid)
        assert len(sessions) == 3 and os.getsid(launcher.pid) not in sessions  # each server in a session of its own
        started = _live_members(sessions)
        assert len(started) > 3, "MLflow and Prefect run worker processes of their own"

        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=90) == 0, "".join(seen)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    while (line := output.get(timeout=10)) is not None:
        seen.append(line)
    assert "stopped the UIs" in "".join(seen)
    survivors = _live_members(sessions)
    assert not survivors, [(p.pid, p.cmdline()) for p in survivors]
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
