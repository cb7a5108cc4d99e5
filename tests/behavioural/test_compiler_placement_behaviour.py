"""Placement on real telemetry of both targets: 83 matmul shapes, each measured as C kernels on a 16-core x86 CPU
and as Triton kernels on an NVIDIA H100 (a lent device, ``benchmarks/compiler_placement.py``; the files are in
``tests/fixtures/placement-h100``). A cost model trained on two thirds of the shapes places the other third."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from aiprim import primitives
from aiprim.primitives.compiler._machine import recorded_caches
from aiprim.primitives.compiler._placement import place
from aiprim.primitives.compiler._source import task_id_of

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "placement-h100"


def _best_measured(tables) -> dict:
    best = tables["measurements"].dropna(subset=["runtime_s"]).groupby("task_id")["runtime_s"].min()
    shapes = [json.loads(s) for s in tables["tasks"].loc[tables["tasks"]["kernel"] == "matmul", "shape"]]
    return {json.dumps(s): {"cpu": best[task_id_of("matmul", s)], "cuda": best[task_id_of("triton_matmul", s)]} for s in shapes}


@pytest.fixture(scope="module")
def placed(tmp_path_factory):
    tables = {name: pd.read_parquet(FIXTURE / f"placement_{name}.parquet") for name in ("tasks", "measurements")}
    truth = _best_measured(tables)
    by_flops = sorted(truth, key=lambda s: np.prod(list(json.loads(s).values())))
    held = by_flops[1::3]  # every third shape by size: both sides of the crossover, never its ends
    held_ids = {task_id_of(k, json.loads(s)) for s in held for k in ("matmul", "triton_matmul")}
    train = {name: t[~t["task_id"].isin(held_ids)] for name, t in tables.items()}
    params = {**yaml.safe_load((ROOT / "configs" / "compiler.yaml").read_text())["train"], "max_epochs": 20}
    runtime = primitives.get("compiler").train_runtime(train, params, tmp_path_factory.mktemp("placement"), seed=0)
    # Decided for the machine that measured the CPU side (its caches, recorded per task), not for this one.
    decisions = {s: place({"kernel": "matmul", "shape": json.loads(s)}, runtime, ["cpu", "cuda"], candidates=500,
                          caches={"cpu": _fixture_caches(tables)})
                 for s in held}
    return runtime, decisions, {s: truth[s] for s in held}


def _fixture_caches(tables) -> tuple[int, int]:
    caches = recorded_caches(tables["tasks"], "matmul")  # one machine's, or a ValueError
    assert caches is not None, "the fixture records its CPU's caches"
    return caches


def test_cpu_times_are_predicted_for_the_caches_of_the_machine_decided_for(placed):
    """A decision for another machine (a snapshot's) reads that machine's caches: a matmul whose working set
    fits the recorded 2 MiB L2 is predicted differently for a machine whose L2 it overflows."""
    runtime, _, _ = placed
    task = {"kernel": "matmul", "shape": {"M": 256, "N": 256, "K": 256}}
    schedules = place(task, runtime, ["cpu"], candidates=200)["targets"]["cpu"]["pool"][:50]
    recorded = runtime.predict(task, schedules, (49152, 2097152))
    tiny = runtime.predict(task, schedules, (4096, 16384))
    assert not np.allclose(recorded, tiny)
    chosen = place(task, runtime, ["cpu"], candidates=200, caches={"cpu": (4096, 16384)})["targets"]["cpu"]
    assert chosen["predicted_s"] == pytest.approx(float(runtime.predict(task, [chosen["schedule"]], (4096, 16384))[0]))


def test_the_runtime_knows_both_targets(placed):
    runtime, _, _ = placed
    assert set(runtime.kernels) == {"matmul", "triton_matmul"}


def test_clear_cases_go_to_the_faster_target(placed):
    _, decisions, truth = placed
    clear = {s: t for s, t in truth.items() if max(t.values()) >= 1.5 * min(t.values())}
    on_cpu = [s for s, t in clear.items() if t["cpu"] < t["cuda"]]
    assert on_cpu and len(on_cpu) < len(clear)  # the held-out shapes hold both kinds of clear case
    wrong = {s: (decisions[s]["choice"], t) for s, t in clear.items() if decisions[s]["choice"] != min(t, key=t.get)}
    assert not wrong, wrong


def test_the_choice_costs_less_than_always_offloading(placed):
    _, decisions, truth = placed
    chosen = np.array([t[decisions[s]["choice"]] / min(t.values()) for s, t in truth.items()])
    always_gpu = np.array([t["cuda"] / min(t.values()) for t in truth.values()])
    assert np.exp(np.log(chosen).mean()) < np.exp(np.log(always_gpu).mean())


def test_predicted_best_times_are_absolute_on_both_targets(placed):
    _, decisions, truth = placed
    for target in ("cpu", "cuda"):
        ratios = np.array([decisions[s]["targets"][target]["predicted_s"] / t[target] for s, t in truth.items()])
        assert 0.5 < np.median(ratios) < 2.0, (target, np.round(ratios, 2))
