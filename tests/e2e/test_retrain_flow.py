"""End to end: the retrain flow under Prefect's test harness, MLflow on SQLite
in a temporary project, ending with a champion that ``load_runtime`` serves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROFILE = "e2e"
# The flow runs every primitive's branch side by side; the balancer's is the one whose quality this module
# asserts, so it keeps the shipped small profile. The other branches only have to go through every step
# beside it (their quality is the behavioural tests' and the benchmarks'): the contract tests' tiny sources
# and a few epochs. With the small profile the flow took 40% more CPU time: the query and compiler
# measurements hold the machine alone while they run, and the sharder's tuning alone took 45 s.
TINY_BRANCHES = {
    "query": {"source": {"workloads": ["skewed"], "skewed_scale": 0.2, "queries_per_template": 3, "timeout_ms": 1000},
              "train": {"max_epochs": 3, "members": 2, "hidden": 16},
              "tune": {"trials": 1, "max_epochs": 1},
              "evaluate": {"repeats": 1, "warmup": 0, "timeout_ms": 1000}},
    "compiler": {"source": {"tasks_per_family": 3, "schedules_per_task": 8, "repeats": 2, "time_limit_s": 0.2,
                            "max_flops": 2 ** 21, "gpu": False},
                 "train": {"max_epochs": 4, "hidden": 32},
                 "tune": {"trials": 1, "max_epochs": 1}},
    "sharder": {"source": {"warehouses": 4, "customers_per_district": 5, "catalogue_items": 60, "transactions": 3000,
                           "shards": 2},
                "train": {"max_epochs": 2, "steps_per_epoch": 4, "txns_per_step": 512},
                "tune": {"trials": 1, "max_epochs": 1},
                "evaluate": {"disruption_trials": 1}},
}


@pytest.fixture(scope="module")
def prefect_harness():
    """One Prefect API for the module's flows, which run in this process (a subprocess would start its own)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# The transfer stage after the branches, as `make run` has it, on the smallest population it can fit (2 members of
# a tiny balancer, trained in seconds): the test is that the flow calls it, benchmarks/transfer.py measures it.
MEMBER_PROFILE = "e2e-member"
TRANSFER = {"transfer": {"primitives": ["balancer"], "population": 2, "new_deployments": 1, "member_profile": MEMBER_PROFILE}}
TINY_BALANCER = {"source": {"servers": 16, "requests": 12000, "keys": 3000, "zipf_offset": 200},
                 "train": {"max_epochs": 2, "scenarios_per_epoch": 4, "hot_units": 100},
                 "tune": {"trials": 1, "max_epochs": 1}, "evaluate": {"disruption_trials": 1}}


@pytest.fixture(scope="module")
def e2e_configs(tmp_path_factory):
    import yaml

    from tests.conftest import configs_with_profile, small_profile

    configs = configs_with_profile(tmp_path_factory.mktemp("e2e-configs"), PROFILE,
                                   {**small_profile(), **TINY_BRANCHES, "pipeline": TRANSFER})
    pipeline = yaml.safe_load((configs / "pipeline.yaml").read_text())
    pipeline["profiles"][MEMBER_PROFILE] = {"balancer": TINY_BALANCER}
    (configs / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return configs


def test_retrain_promotes_a_champion_and_guards_it(prefect_harness, e2e_configs, project, balancer_tables, capsys,
                                                   monkeypatch):
    from aiprim.flows.cli import main
    from aiprim.flows.retrain import retrain
    from aiprim.registry import load_runtime
    from tests.conftest import write_balancer_snapshot

    monkeypatch.setenv("AIPRIM_CONFIG_DIR", str(e2e_configs))
    results = retrain(profile=PROFILE)
    assert "error" not in results["query"], results["query"]  # the query branch ran beside it, on DuckDB
    assert "error" not in results["compiler"], results["compiler"]  # and the compiler's, on kernels timed here
    assert "error" not in results["sharder"], results["sharder"]
    assert {"top1_score", "kendall_tau", "mape"} <= set(results["compiler"]["report"]["metrics"])
    branch = results["balancer"]
    assert "error" not in branch, branch
    assert branch["decision"]["promoted"], branch["decision"]
    report = branch["report"]
    assert report["metrics"]["peak_to_mean"] < min(m["peak_to_mean"] for m in report["baselines"].values())
    # After the branches, the transfer stage: a population of two trained, one new deployment decoded from it.
    transferred = branch["transfer"]
    assert transferred["population"] == 2 and transferred["grown"] == 2, transferred
    [decoded] = transferred["decoded"]
    assert decoded["deployment"] == "family-0002" and decoded["version"] > branch["version"], decoded

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
    assert main(["run", "--profile", PROFILE, "--source", str(source)]) == 1
    err = capsys.readouterr().err
    assert "table servers, column cap_cpu" in err
    # A balancer snapshot retrains the balancer alone. Its failure is said by aiprim once; Prefect's own
    # reports of the failed task, subflow and branch stay in its UI.
    assert err.count("aiprim: error: ") == 1 and "Task run failed" not in err and "Finished in state" not in err, err
    assert "aiprim: error: balancer: " in err, err
    # One that does not even read (a table missing) fails the snapshot step, whose retries are for I/O: once.
    (source / "requests.parquet").unlink()
    assert main(["run", "--profile", PROFILE, "--source", str(source)]) == 1
    err = capsys.readouterr().err
    assert err.count("imported snapshot") == 1 and "aiprim: error: balancer: table requests: missing" in err, err
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


def test_rounds_draw_new_work_and_train_on_the_window(prefect_harness, project, monkeypatch, capsys):
    """`aiprim run --rounds 2` on the compiler-free, cheap third-party primitive: two snapshots with
    seeds 0 and 1, the primary metric per round in outputs/rounds, and an MLflow run with the curve.

    The command runs in this process, under the module's Prefect API: in a subprocess it would start
    Prefect's temporary server again (tests/code/test_console.py runs `aiprim run` in a subprocess)."""
    from aiprim.flows.cli import main
    from tests.conftest import THIRD_PARTY

    monkeypatch.syspath_prepend(str(THIRD_PARTY))  # the admission primitive's distribution, as pip installs it
    assert main(["run", "--primitives", "admission", "--profile", "small", "--rounds", "2"]) == 0
    stdout = capsys.readouterr().out
    curve = json.loads((project / "outputs" / "rounds" / "admission.json").read_text())
    assert [p["round"] for p in curve["points"]] == [0, 1]
    assert all(p["learned"] is not None and p["best_peer"] for p in curve["points"])
    assert (project / "outputs" / "rounds" / "admission.png").stat().st_size > 0
    assert "per round, on that round's held-out data" in stdout and "error_rate" in stdout
    sources = sorted(json.loads((project / "data" / "snapshots" / "admission" / p["snapshot"] / "manifest.json").read_text())["source"]
                     for p in curve["points"])
    assert sources == ["aiprim embedded generator (seed 0)", "aiprim embedded generator (seed 1)"], "each round draws new work"
    history = json.loads((project / "data" / "accepted" / "admission.json").read_text())["history"]
    assert [Path(h["snapshot"]).name for h in history] == [p["snapshot"] for p in curve["points"]]


def test_a_dvc_stage_folder_holding_another_snapshot_tunes_and_trains_anew(project, monkeypatch, capsys):
    """DVC stages keep their snapshot at one path (``data/dvc/<primitive>/snapshot``), refilled with another
    snapshot by every `dvc exp run -S ...source...` or forced snapshot stage. The tuning study and the training
    checkpoint follow the snapshot's content: keyed by the folder, the second training resumed the first one's
    finished checkpoint and logged the first snapshot's model as the second's."""
    import mlflow

    from aiprim.flows.cli import main
    from aiprim.primitives._snapshot import snapshot_id
    from tests.conftest import THIRD_PARTY

    monkeypatch.syspath_prepend(str(THIRD_PARTY))
    folder = project / "data" / "dvc" / "admission"
    snapshots, run_ids = [], []
    for _ in range(2):  # the second snapshot is the next round's: another seed, the same folder
        for step in ("snapshot", "validate", "tune", "train"):
            assert main(["step", step, "admission", "--dir", str(folder), "--profile", "small"]) == 0
        snapshots.append(snapshot_id(folder / "snapshot"))
        run_ids.append(json.loads((folder / "train.json").read_text())["run_id"])
    assert snapshots[0] != snapshots[1]
    assert "resuming from" not in capsys.readouterr().err
    runs = [mlflow.get_run(r) for r in run_ids]
    assert [r.data.tags["aiprim.snapshot_id"] for r in runs] == snapshots
    assert runs[0].data.tags["aiprim.train_key"] != runs[1].data.tags["aiprim.train_key"]
    assert all(r.data.tags["aiprim.train_key"].startswith(s) for r, s in zip(runs, snapshots))

    # The evaluate stage's DVC metrics: the challenger's numbers and the primary metric of the best peer.
    assert main(["step", "evaluate", "admission", "--dir", str(folder), "--profile", "small"]) == 0
    metrics = json.loads((folder / "metrics.json").read_text())
    report = json.loads((folder / "evaluation.json").read_text())["evaluation"]
    assert set(metrics) == {"learned", "best_peer"}, metrics  # no champion yet
    assert metrics["learned"]["error_rate"] == report["metrics"]["error_rate"]
    assert metrics["best_peer"] == {"error_rate": min(m["error_rate"] for m in report["baselines"].values())}
