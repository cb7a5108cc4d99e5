"""Behavioural tests of the query value model: it learns which plan shape is slow, and an unsure
ensemble keeps the engine's own plan."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aiprim import primitives


def _plan(join: str, rows: int) -> str:
    scan = lambda table, n: {"name": "SEQ_SCAN", "children": [], "extra_info": {"Table": table, "Estimated Cardinality": str(n)}}
    return json.dumps([{"name": "UNGROUPED_AGGREGATE", "children": [
        {"name": join, "children": [scan("a", rows), scan("b", rows // 10)], "extra_info": {"Estimated Cardinality": str(rows)}}],
        "extra_info": {}}])


@pytest.fixture(scope="module")
def nested_loops_are_slow(tmp_path_factory):
    """Telemetry where the native plan (a nested loop) is ~10x slower than the hash join of arm 1."""
    rng = np.random.default_rng(0)
    queries, executions = [], []
    for i in range(60):
        rows = int(rng.integers(1_000, 1_000_000))
        qid = f"q{i:03d}"
        queries.append({"query_id": qid, "template": f"synthetic_{i % 4}", "sql": "SELECT 1"})
        base = rows / 1000.0
        for arm, join, ms in ((0, "NESTED_LOOP_JOIN", 10 * base), (1, "HASH_JOIN", base), (2, "PIECEWISE_MERGE_JOIN", 3 * base)):
            executions.append({"query_id": qid, "arm": arm, "plan": _plan(join, rows), "latency_ms": ms * rng.lognormal(0, 0.1),
                               "timed_out": False, "rows": 1, "ts": float(i)})
    tables = {
        "queries": pd.DataFrame(queries),
        "arms": pd.DataFrame({"arm": np.array([0, 1, 2], np.int32), "name": ["native", "hash", "merge"],
                              "settings": ["[]", '["x=1"]', '["y=1"]']}),
        "executions": pd.DataFrame(executions).astype({"arm": "int32", "rows": "Int64"}),
    }
    prim = primitives.get("query")
    runtime = prim.train_runtime(tables, {"max_epochs": 40, "members": 5, "hidden": 32, "lr": 0.005},
                                 tmp_path_factory.mktemp("query-rt"))
    return runtime


def test_model_ranks_the_slow_plan_shape_last(nested_loops_are_slow):
    runtime = nested_loops_are_slow
    plans = [_plan("NESTED_LOOP_JOIN", 400_000), _plan("HASH_JOIN", 400_000), _plan("PIECEWISE_MERGE_JOIN", 400_000)]
    predicted = runtime.predict(plans)
    assert predicted[1] < predicted[2] < predicted[0], predicted
    assert runtime.decide(runtime.predict_log(plans), [0, 1, 2]) == 1


def test_bigger_inputs_are_predicted_slower(nested_loops_are_slow):
    small, big = nested_loops_are_slow.predict([_plan("HASH_JOIN", 5_000), _plan("HASH_JOIN", 800_000)])
    assert big > 3 * small


def test_an_unsure_ensemble_keeps_the_native_plan():
    from aiprim.primitives.query._runtime import decide

    # Members that disagree about which arm is faster: no arm is chosen over the native plan.
    disagree = np.array([[1.0, 0.2], [1.0, 1.9], [1.0, 0.1], [1.0, 2.0]])
    assert decide(disagree, [0, 1], z=1.0, min_gain=0.1) == 0
    # A tiny predicted gain is not worth leaving the native plan either, however sure.
    assert decide(np.array([[1.0, 0.97]] * 4), [0, 1], z=1.0, min_gain=0.1) == 0
    assert decide(np.array([[1.0, 0.3]] * 4), [0, 1], z=1.0, min_gain=0.1) == 1


def test_the_decision_rule_is_calibrated_and_stored(nested_loops_are_slow):
    meta = nested_loops_are_slow.meta
    assert {"uncertainty_z", "min_gain", "val_total_latency_ratio"} <= set(meta)
    assert meta["val_total_latency_ratio"] < 0.5, "on its validation templates the rule takes the 10x faster arm"


def test_thompson_sampling_explores_what_members_prefer(nested_loops_are_slow):
    rng = np.random.default_rng(1)
    log_pred = np.array([[0.0, 1.0], [1.0, 0.0]])  # member 0 prefers arm 0, member 1 arm 1
    picks = {nested_loops_are_slow.sample_arm(log_pred, [0, 1], rng) for _ in range(40)}
    assert picks == {0, 1}
