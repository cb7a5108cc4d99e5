"""A tracking server that is not there is one line within seconds, not four silent minutes of MLflow's retries."""

from __future__ import annotations

import os
import socket

import pytest


@pytest.fixture
def no_proxy_env(monkeypatch):
    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)  # through a proxy the host is not probed


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_server_is_one_line_naming_it_without_its_credentials(project, monkeypatch, capsys, no_proxy_env):
    from aiprim.flows.cli import main
    from aiprim.registry import _store

    port = _closed_port()
    monkeypatch.setattr(_store, "ANSWER_WAIT_S", 0.5)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:s3cret@127.0.0.1:{port}")
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        f"aiprim: error: the MLflow tracking server http://***@127.0.0.1:{port} does not answer (Connection refused); "
        "start it, or point MLFLOW_TRACKING_URI at one that runs"), err
    assert "s3cret" not in err

    import aiprim

    with pytest.raises(aiprim.registry.StoreUnavailable, match=f"127.0.0.1:{port} does not answer"):
        aiprim.load_runtime("balancer")


def test_a_server_that_accepts_connections_passes(no_proxy_env):
    from aiprim.registry._store import require_answer

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        require_answer(f"http://127.0.0.1:{server.getsockname()[1]}")
