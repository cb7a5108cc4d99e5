"""The scale-out stack's numbers: retrain in-process vs on the stack, tuning with 1 and 2 workers, DDP vs one process.

Every part runs the real commands in subprocesses, each in a fresh project folder (AIPRIM_HOME):

- retrain: `aiprim run --primitives balancer --profile small` on the embedded stores (SQLite, Prefect's
  throwaway API), then `aiprim stack up` and the same run against the stack (MLflow server on
  PostgreSQL with basic auth and proxied artifacts, Prefect server, Optuna on PostgreSQL), then
  the same snapshot once more as a deployment run by the stack's worker (`aiprim stack run`);
- tuning: `aiprim tune balancer SNAPSHOT --trials T --workers W` for W = 1 and 2 on a throwaway
  PostgreSQL (a fresh database each), trials per minute of wall time;
- DDP: the balancer trained by Lightning in one process and with `devices=2, strategy=ddp_spawn`
  (two processes, gloo) on the same data, wall time and `peak_to_mean` on the held-out part.

    python benchmarks/scale_out.py [--trials 6] [--parts ddp,tuning,retrain] --out benchmarks/results/scale_out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIENT_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_URL",
                    "PREFECT_API_AUTH_STRING", "AIPRIM_OPTUNA_STORAGE", "AIPRIM_CONFIG_DIR")
SMALL_SOURCE = {"servers": 24, "requests": 40000, "keys": 8000, "zipf_offset": 200}  # the small profile's source
# The kernel alone routes (as when this was measured): with the split LP, every class routes by the same split
# whatever DDP trained, and the DDP-against-one-process comparison would compare two copies of it.
SMALL_TRAIN = {"max_epochs": 6, "scenarios_per_epoch": 16, "hot_units": 200, "lp_split": False}


def aiprim(home: Path, *args: str, extra_env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
    env.update(AIPRIM_HOME=str(home), PREFECT_HOME=str(home / ".prefect"), **(extra_env or {}))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "aiprim.flows.cli", *args], cwd=home, env=env, capture_output=True,
                          text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"aiprim {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done, seconds


def read_env_file(path: Path) -> dict:
    import shlex

    return {k: shlex.split(v)[0] for k, _, v in (line.partition("=") for line in path.read_text().splitlines())}


def retrain(root: Path) -> dict:
    embedded = root / "embedded"
    embedded.mkdir()
    _, in_process = aiprim(embedded, "run", "--primitives", "balancer", "--profile", "small")
    home = root / "stack"
    home.mkdir()
    _, stack_up = aiprim(home, "stack", "up")
    try:
        env = read_env_file(home / ".stack" / "stack.env")
        _, on_stack = aiprim(home, "run", "--primitives", "balancer", "--profile", "small", extra_env=env)
        # The same snapshot again (a new small draw may fail the drift check), now run by the stack's worker.
        snapshot = next((home / "data" / "snapshots" / "balancer").iterdir())
        _, on_worker = aiprim(home, "stack", "run", "--primitives", "balancer", "--profile", "small", "--source",
                              str(snapshot))
    finally:
        _, stack_down = aiprim(home, "stack", "down", "--purge")
    return {"in_process_s": round(in_process, 1), "stack_up_s": round(stack_up, 1), "on_stack_s": round(on_stack, 1),
            "on_stack_worker_s": round(on_worker, 1), "stack_down_s": round(stack_down, 1)}


def tuning(root: Path, trials: int) -> dict:
    import psycopg

    from aiprim.primitives.query._postgres import LocalPostgres

    snapshot_home = root / "tune"
    snapshot_home.mkdir()
    done, _ = aiprim(snapshot_home, "snapshot", "balancer", "--profile", "small")
    snapshot = done.stdout.strip().splitlines()[-1]
    results = {}
    with LocalPostgres() as server:
        for workers in (1, 2):
            database = f"optuna_w{workers}"
            with psycopg.connect(server.dsn, autocommit=True) as connection:
                connection.execute(f'CREATE DATABASE "{database}"')
            done, seconds = aiprim(snapshot_home, "tune", "balancer", snapshot, "--trials", str(trials), "--workers",
                                   str(workers), "--profile", "small", "--json",
                                   extra_env={"AIPRIM_OPTUNA_STORAGE": server.url(database, "postgresql+psycopg")})
            report = json.loads(done.stdout)
            results[f"workers_{workers}"] = {key: report[key] for key in ("new_trials", "complete", "pruned", "failed",
                                                                           "seconds", "trials_per_minute")}
            results[f"workers_{workers}"]["command_s"] = round(seconds, 1)
    return results


def ddp(root: Path) -> dict:
    from aiprim import primitives
    from aiprim.primitives.balancer._source import generate

    prim = primitives.get("balancer")
    train, held_out = prim.split(generate(SMALL_SOURCE, seed=7), 0.2)
    results = {}
    for label, devices, strategy in (("one_process", 1, "auto"), ("ddp_two_processes", 2, "ddp_spawn")):
        started = time.perf_counter()
        runtime = prim.train_runtime(train, SMALL_TRAIN, root / label, seed=0, devices=devices, strategy=strategy)
        seconds = time.perf_counter() - started
        metrics = prim.evaluate(runtime, held_out, {"baselines": False, "disruption_trials": 1, "hash_draws": 1}).candidates["learned"]
        results[label] = {"train_s": round(seconds, 1), "peak_to_mean": round(metrics["peak_to_mean"], 4),
                          "lower_bound": round(metrics["peak_to_mean_lower_bound"], 4)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--parts", default="ddp,tuning,retrain",
                        help="which to measure; the others keep their numbers from --out if it exists")
    parser.add_argument("--out", default="benchmarks/results/scale_out.json")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_at_start": os.getloadavg()}
    measures = {"ddp": ddp, "tuning": lambda root: tuning(root, args.trials), "retrain": retrain}
    parts = [(name, measures[name]) for name in args.parts.split(",")]
    with tempfile.TemporaryDirectory(prefix="aiprim-scale-out-") as tmp:
        for name, measure in parts:
            results[name] = measure(Path(tmp))
            results["machine"]["load_average_now"] = os.getloadavg()
            out.write_text(json.dumps(results, indent=2))  # what is measured so far survives a later failure
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
