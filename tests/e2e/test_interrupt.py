"""Ctrl-C or SIGTERM during `aiprim run` stops the branches, which Prefect runs in worker threads, not only the
main thread.

Before, the thread pool waited for each branch to finish: a version was trained, registered and promoted as
champion 25 s after the interrupt, and only then did the command exit. SIGTERM also left the run's temporary
Prefect server running, orphaned (the process died by the signal, skipping every cleanup): here the pipe of
its stderr, which that server inherits, would then never close.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python then installs its own handler, as in a terminal


@pytest.mark.parametrize("signum, returncode", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_registers_and_promotes_nothing(project, signum, returncode):
    command = [sys.executable, "-m", "aiprim.flows.cli", "run", "--profile", "small", "--primitives", "balancer"]
    # A session of its own, so that whatever it started can be killed if the test fails.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_as_in_a_terminal, start_new_session=True)
    try:
        lines = []
        deadline = time.time() + 300
        # The snapshot passed validation: the branch is now tuning, then training, tens of seconds from registering.
        while time.time() < deadline and (line := proc.stderr.readline()):
            lines.append(line)
            if "valid in" in line:
                break
        assert any("valid in" in line for line in lines), "".join(lines)
        proc.send_signal(signum)
        try:
            _, rest = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running, or something it started holds its stderr, 120 s after the signal "
                        f"(exit status {proc.poll()})")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    err = "".join(lines) + rest
    assert proc.returncode == returncode, err
    how = "interrupted" if signum == signal.SIGINT else "terminated"
    assert err.rstrip().endswith(f"aiprim: {how} (each branch stopped before its next step; nothing after it was "
                                 "registered or promoted)"), err
    assert "registered aiprim-balancer" not in err and "promoted" not in err.replace("or promoted)", ""), err
    assert "Traceback" not in err, err

    from aiprim.registry._store import configure

    client = configure()
    assert not client.search_model_versions("name = 'aiprim-balancer'"), "nothing registered after the interrupt"
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
