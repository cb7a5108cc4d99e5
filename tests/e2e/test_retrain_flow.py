"""End to end: the retrain flow under Prefect's test harness, MLflow on SQLite
in a temporary project, ending with a champion that ``load_runtime`` serves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_retrain_promotes_a_champion_and_guards_it(prefect_harness, project, balancer_tables, capsys):
    from aiprim.flows.cli import main
    from aiprim.flows.retrain import retrain
    from aiprim.registry import load_runtime
    from tests.conftest import write_balancer_snapshot

    results = retrain(profile="small")
    assert "error" not in results["query"], results["query"]  # the query branch ran beside it, on DuckDB
    assert "error" not in results["compiler"], results["compiler"]  # and the compiler's, on kernels timed here
    assert {"top1_score", "kendall_tau", "mape"} <= set(results["compiler"]["report"]["metrics"])
    branch = results["balancer"]
    assert "error" not in branch, branch
    assert branch["decision"]["promoted"], branch["decision"]
    report = branch["report"]
    assert report["metrics"]["peak_to_mean"] < min(m["peak_to_mean"] for m in report["baselines"].values())

    # The champion serves through the light loader, in a fresh process.
    code = (
        "import sys, pandas as pd; from aiprim import load_runtime; "
        "rt = load_runtime('balancer'); "
        "assert not [m for m in ('lightning', 'prefect') if m in sys.modules]; print(type(rt).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "BalancerRuntime" in out.stdout, out.stderr
    runtime = load_runtime("balancer")
    routed = runtime.route(balancer_tables["requests"].head(1000), balancer_tables["servers"])
    assert set(routed) <= set(balancer_tables["servers"]["server_id"])

    capsys.readouterr()
    # The registered MLflow model (pyfunc, logged from code) serves too.
    import mlflow.pyfunc

    from aiprim.registry import configure

    configure()
    served = mlflow.pyfunc.load_model("models:/aiprim-balancer@champion")
    example = balancer_tables["requests"].head(50).drop(columns=["server_id", "latency_ms"]).astype({"replica": "float64"})
    assert set(served.predict(example)) <= set(balancer_tables["servers"]["server_id"])

    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    champion = status["balancer"]["version"]
    assert champion == branch["version"]
    assert status["balancer"]["lineage"]["snapshot_id"] == branch["snapshot"].rsplit("/", 1)[-1]
    assert "peak_to_mean" in status["balancer"]["metrics"]

    # A bad snapshot brought by the user stops the branch, and the champion stays.
    bad = dict(balancer_tables)
    bad["servers"] = balancer_tables["servers"].assign(cap_cpu=-1.0)
    source = write_balancer_snapshot(project / "incoming", bad)
    assert main(["run", "--profile", "small", "--source", str(source)]) == 1
    err = capsys.readouterr().err
    assert "table servers, column cap_cpu" in err
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["balancer"]["version"] == champion
    assert source.exists(), "the user's snapshot is untouched"

    # evaluate --json: the report shape of TELEMETRY.md
    snapshot = branch["snapshot"]
    assert main(["evaluate", "balancer", "--snapshot", snapshot, "--part", "holdout", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report) >= {"primitive", "model", "snapshot", "metrics", "baselines"}
    for key in ("peak_to_mean", "peak_to_mean_lower_bound", "affinity_violation_rate", "anti_affinity_violation_rate",
                "class_violation_rate", "disruption_ratio_remove", "disruption_ratio_add", "lookups_per_s"):
        assert key in report["metrics"], key
    assert {"rendezvous", "weighted_rendezvous", "jump_hash", "maglev", "bounded_load_ch"} <= set(report["baselines"])


def test_rounds_draw_new_work_and_train_on_the_window(tmp_path):
    """`aiprim run --rounds 2` on the compiler-free, cheap third-party primitive: two snapshots with
    seeds 0 and 1, the primary metric per round in outputs/rounds, and an MLflow run with the curve."""
    import os

    from tests.conftest import THIRD_PARTY

    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "AIPRIM_CONFIG_DIR")}
    env.update(AIPRIM_HOME=str(tmp_path), PREFECT_HOME=str(tmp_path / ".prefect"), PYTHONPATH=str(THIRD_PARTY),
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    command = [sys.executable, "-m", "aiprim.flows.cli", "run", "--primitives", "admission", "--profile", "small", "--rounds", "2"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    curve = json.loads((tmp_path / "outputs" / "rounds" / "admission.json").read_text())
    assert [p["round"] for p in curve["points"]] == [0, 1]
    assert all(p["learned"] is not None and p["best_peer"] for p in curve["points"])
    assert (tmp_path / "outputs" / "rounds" / "admission.png").stat().st_size > 0
    assert "primary metric per round" in result.stdout
    sources = sorted(json.loads((tmp_path / "data" / "snapshots" / "admission" / p["snapshot"] / "manifest.json").read_text())["source"]
                     for p in curve["points"])
    assert sources == ["aiprim embedded generator (seed 0)", "aiprim embedded generator (seed 1)"], "each round draws new work"
    history = json.loads((tmp_path / "data" / "accepted" / "admission.json").read_text())["history"]
    assert [Path(h["snapshot"]).name for h in history] == [p["snapshot"] for p in curve["points"]]
