"""End to end through the command line: measure a user's tasks, train, evaluate, autotune."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from aiprim.flows.cli import main

pytestmark = pytest.mark.slow

TASKS = [
    {"task_id": "mm-a", "kernel": "matmul", "shape": json.dumps({"M": 96, "N": 64, "K": 80})},
    {"task_id": "mm-b", "kernel": "matmul", "shape": json.dumps({"M": 64, "N": 128, "K": 64})},
    {"task_id": "mm-c", "kernel": "matmul", "shape": json.dumps({"M": 128, "N": 96, "K": 48})},
    {"task_id": "conv-a", "kernel": "conv2d", "shape": json.dumps({"N": 1, "C": 8, "H": 14, "W": 14, "K": 8, "R": 3, "S": 3})},
    {"task_id": "conv-b", "kernel": "conv2d", "shape": json.dumps({"N": 1, "C": 4, "H": 20, "W": 20, "K": 16, "R": 3, "S": 3})},
    {"task_id": "conv-c", "kernel": "conv2d", "shape": json.dumps({"N": 2, "C": 8, "H": 12, "W": 12, "K": 8, "R": 1, "S": 1})},
    {"task_id": "st-a", "kernel": "stencil2d", "shape": json.dumps({"H": 130, "W": 200})},
    {"task_id": "st-b", "kernel": "stencil2d", "shape": json.dumps({"H": 256, "W": 96})},
    {"task_id": "st-c", "kernel": "stencil2d", "shape": json.dumps({"H": 64, "W": 300})},
]


def test_measure_given_tasks_train_evaluate_autotune(project, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AIPRIM_PROFILE", "small")
    tasks_file = tmp_path / "tasks.parquet"
    pd.DataFrame(TASKS).to_parquet(tasks_file)
    assert main(["snapshot", "compiler", "--tasks", str(tasks_file), "--out", str(tmp_path / "snaps")]) == 0
    directory = capsys.readouterr().out.strip().splitlines()[-1]
    measured = pd.read_parquet(f"{directory}/measurements.parquet")
    assert sorted(measured["task_id"].unique()) == sorted(t["task_id"] for t in TASKS)  # exactly the given tasks
    assert json.loads(open(f"{directory}/manifest.json").read())["target"]

    assert main(["validate", "compiler", directory]) == 0
    assert main(["train", "compiler", directory, "--trials", "0"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "compiler", "--snapshot", directory, "--model", "challenger", "--part", "holdout", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("top1_score", "top5_score", "kendall_tau", "mape", "tuning_curve"):
        assert key in report["metrics"], key
    assert set(report["metrics"]["tuning_curve"]) == {"1", "5", "10", "20"}
    assert {"xgboost", "roofline", "random"} <= set(report["baselines"])
    assert report["peer_training"] == "training part"
    assert 0.0 <= report["metrics"]["top1_score"] <= 1.0 and report["tasks_evaluated"] == 3

    assert main(["autotune", "--task", "matmul:M=112,N=80,K=64", "--model", "challenger", "--candidates", "300",
                 "--trials", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["measured"] == 4 and result["candidates_scored"] == 300
    assert result["best"]["runtime_s"] > 0 and set(result["best"]["schedule"]) >= {"tile_m", "order", "threads"}
    assert [t["rank"] for t in result["trials"]] == [1, 2, 3, 4]

    # Placement: from predictions alone (--trials 0) on the one target it was trained on; never on a target whose
    # kernels it has not seen (tests/behavioural/test_compiler_placement_behaviour.py places on real GPU telemetry).
    assert main(["autotune", "--task", "matmul:M=112,N=80,K=64", "--model", "challenger", "--targets", "cpu",
                 "--trials", "0", "--candidates", "300", "--json"]) == 0
    placed = json.loads(capsys.readouterr().out)
    assert placed["choice"] == "cpu" and placed["targets"]["cpu"]["kernel"] == "matmul"
    assert placed["targets"]["cpu"]["predicted_s"] > 0 and "measured_choice" not in placed
    assert main(["autotune", "--task", "matmul:M=112,N=80,K=64", "--model", "challenger", "--targets", "cpu",
                 "--trials", "2", "--candidates", "300"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("-> cpu") and "cpu predicted" in lines[0]
    assert lines[1].startswith("measured (best of the model's top 2 on each): cpu ") and lines[1].endswith("the choice was right")
    assert main(["autotune", "--task", "matmul:M=112,N=80,K=64", "--model", "challenger", "--targets", "cpu,cuda",
                 "--trials", "0"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained on no triton_matmul task" in err, err


@pytest.mark.parametrize("spec, expected", [
    ("matmul:M=64,N=64", "--task: matmul shape misses dimension K"),
    ("fft:N=8", "--task: unknown kernel family 'fft'"),
    ("matmul:M=64,N=x,K=2", "--task: dimension 'N=x' is not NAME=INTEGER"),
    ("matmul:M=64,N=64,K=64 --targets cpu,tpu", "--targets 'cpu,tpu': unknown target tpu"),
    ("conv2d:N=1,C=8,H=14,W=14,K=8,R=3,S=3 --targets cpu,cuda --trials 0", "conv2d has no kernel family on cuda"),
    # Counts are checked before the registry is asked for a model (this project has none).
    ("matmul:M=64,N=64,K=64 --trials -1", "--trials must be at least 1"),
    ("matmul:M=64,N=64,K=64 --candidates 3", "--candidates must be at least --trials (10), not 3"),
])
def test_autotune_bad_task_is_one_line(spec, expected, project, capsys):
    task, *options = spec.split(" ")
    assert main(["autotune", "--task", task, *options]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_tasks_file_for_a_primitive_that_measures_none(project, tmp_path, capsys):
    pd.DataFrame(TASKS[:1]).to_parquet(tmp_path / "tasks.parquet")
    assert main(["snapshot", "balancer", "--tasks", str(tmp_path / "tasks.parquet")]) != 0
    assert "--tasks is for the compiler" in capsys.readouterr().err
