"""Ctrl-C during `aiprim run` stops the branches, which Prefect runs in worker threads, not only the main thread.

Before, the thread pool waited for each branch to finish: a version was trained, registered and promoted as
champion 25 s after the interrupt, and only then did the command exit 130.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python then installs its own handler, as in a terminal


def test_ctrl_c_in_a_run_registers_and_promotes_nothing(project):
    command = [sys.executable, "-m", "aiprim.flows.cli", "run", "--profile", "small", "--primitives", "balancer"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_as_in_a_terminal)
    lines = []
    deadline = time.time() + 300
    # The snapshot passed validation: the branch is now tuning, then training, tens of seconds from registering.
    while time.time() < deadline and (line := proc.stderr.readline()):
        lines.append(line)
        if "valid in" in line:
            break
    assert any("valid in" in line for line in lines), "".join(lines)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=300)
    err = "".join(lines) + rest
    assert proc.returncode == 130, err
    assert err.rstrip().endswith("aiprim: interrupted (each branch stopped before its next step; nothing after it was "
                                 "registered or promoted)"), err
    assert "registered aiprim-balancer" not in err and "promoted" not in err.replace("or promoted)", ""), err
    assert "Traceback" not in err, err

    from aiprim.registry._store import configure

    client = configure()
    assert not client.search_model_versions("name = 'aiprim-balancer'"), "nothing registered after the interrupt"
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
