"""Benchmark: what stopping `aiprim run` does (stop 33).

For each signal (SIGINT as Ctrl-C sends it, SIGTERM as `timeout` or a supervisor does), in a project folder of
its own: start `aiprim run --profile small --primitives balancer`, send the signal once the snapshot has passed
validation (the branch is then tuning or training), and record the seconds from the signal to the exit, the
exit status, the model versions registered, MLflow runs left RUNNING, and processes of the run still alive
afterwards (a temporary Prefect server left behind). Each run gets a session of its own, so that leftovers
can be found and killed.

    .venv/bin/python benchmarks/interrupt.py [--repeats 1] [--out benchmarks/results/interrupt.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python then installs its own handler, as in a terminal


def _session_members(session: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == session:
                    members.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return members


def stop_once(signum: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="aiprim-interrupt-") as home:
        env = {**os.environ, "AIPRIM_HOME": home}
        env.pop("MLFLOW_TRACKING_URI", None)
        command = [sys.executable, "-m", "aiprim.flows.cli", "run", "--profile", "small", "--primitives", "balancer"]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_sigint_as_in_a_terminal, start_new_session=True)
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "valid in" in line:
                break
        sent = time.perf_counter()
        proc.send_signal(signum)
        proc.wait(timeout=600)
        seconds = time.perf_counter() - sent
        time.sleep(2)  # what outlives the run, after it has had its chance to stop it
        left = [pid for pid in _session_members(proc.pid) if pid != proc.pid]
        for pid in left:
            os.kill(pid, signal.SIGKILL)

        from mlflow import MlflowClient

        uri = f"sqlite:///{home}/mlruns.db"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        versions = client.search_model_versions("name = 'aiprim-balancer'")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        return {"signal": signal.Signals(signum).name, "seconds_to_exit": round(seconds, 1), "exit_status": proc.returncode,
                "versions_registered": len(versions), "runs_left_running": sum(r.info.status == "RUNNING" for r in runs),
                "processes_left": len(left), "last_line": (lines[-1].strip() if lines else "")[:120]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/interrupt.json")
    args = parser.parse_args()
    results = [stop_once(signum) for _ in range(args.repeats) for signum in (signal.SIGINT, signal.SIGTERM)]
    print(f"{'signal':<8} {'exit':>5} {'s to exit':>10} {'versions':>9} {'RUNNING runs':>13} {'processes left':>15}")
    for r in results:
        print(f"{r['signal']:<8} {r['exit_status']:>5} {r['seconds_to_exit']:>10} {r['versions_registered']:>9} "
              f"{r['runs_left_running']:>13} {r['processes_left']:>15}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                                          "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
