"""Behavioural tests of the query value model: it learns which arm wins for which parameters of a
template, stays native on a template it has never seen, and an unsure ensemble keeps the engine's plan."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aiprim import primitives

HEAVY_SQL = "SELECT count(*) FROM facts f JOIN dims d ON d.id = f.dim_id WHERE f.region = {v}"
OTHER_SQL = "SELECT count(*) FROM other o WHERE o.kind = {v}"


def _telemetry(seed: int = 0, n: int = 80):
    """Template "heavy": its heavy parameterisations (many surviving rows) run 5x faster under arm 1,
    its light ones 3x slower; template "other": arm 1 is always 2x slower, arm 2 always 3x slower."""
    rng = np.random.default_rng(seed)
    queries, executions = [], []
    for i in range(n):
        qid = f"q{i:03d}"
        if i % 2 == 0:
            heavy = bool(rng.random() < 0.5)
            rows = int(rng.integers(50_000, 100_000) if heavy else rng.integers(10, 500))
            sql, native = HEAVY_SQL.format(v=i), (200.0 if heavy else 10.0)
            ratios = {1: 0.2 if heavy else 3.0, 2: 1.5}
        else:
            rows = int(rng.integers(10, 1_000))
            sql, native, ratios = OTHER_SQL.format(v=i), 20.0, {1: 2.0, 2: 3.0}
        queries.append({"query_id": qid, "template": "heavy" if i % 2 == 0 else "other", "sql": sql,
                        "probes": json.dumps([[rows, 100_000]])})
        for arm, ratio in ((0, 1.0), *ratios.items()):
            executions.append({"query_id": qid, "arm": arm, "plan": "{}", "latency_ms": native * ratio * rng.lognormal(0, 0.05),
                               "timed_out": False, "rows": 1, "ts": float(i), "timeout_ms": 10_000.0})
    return {
        "queries": pd.DataFrame(queries),
        "arms": pd.DataFrame({"arm": np.array([0, 1, 2], np.int32), "name": ["native", "one", "two"],
                              "settings": ["[]", '["x=1"]', '["y=1"]']}),
        "executions": pd.DataFrame(executions).astype({"arm": "int32", "rows": "Int64"}),
    }


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    prim = primitives.get("query")
    return prim.train_runtime(_telemetry(), {"max_epochs": 80, "members": 5, "hidden": 32, "lr": 0.01},
                              tmp_path_factory.mktemp("query-rt"))


def _choose(runtime, sql: str, rows: int) -> int:
    from aiprim.primitives.query._templates import fingerprint

    template = fingerprint(sql)
    if not runtime.known(template):
        return 0
    log_ratios, native_ms = runtime.predictions_of(template, [(rows, 100_000)])
    return runtime.decide(log_ratios, runtime.arm_ids, native_ms)


def test_the_arm_follows_the_parameters_of_a_template(runtime):
    assert _choose(runtime, HEAVY_SQL.format(v=12345), 80_000) == 1, "heavy parameters: arm 1 is 5x faster"
    assert _choose(runtime, HEAVY_SQL.format(v=12345), 100) == 0, "light parameters: arm 1 is 3x slower"


def test_a_template_where_no_arm_helps_stays_native(runtime):
    assert _choose(runtime, OTHER_SQL.format(v=7), 300) == 0


def test_a_template_never_seen_stays_native(runtime):
    unseen = "SELECT max(z) FROM elsewhere e WHERE e.z < 3"
    assert _choose(runtime, unseen, 1) == 0
    frame = runtime.predict_frame(pd.DataFrame({"sql": [unseen], "probes": ["[[1, 100000]]"]}), {})
    assert frame["arm"].tolist() == [0] and frame["ratio_arm_1"].isna().all()


def test_the_native_latency_is_predicted_from_the_parameters(runtime):
    from aiprim.primitives.query._templates import fingerprint

    template = fingerprint(HEAVY_SQL.format(v=1))
    heavy = runtime.predictions_of(template, [(90_000, 100_000)])[1]
    light = runtime.predictions_of(template, [(50, 100_000)])[1]
    assert heavy > 100 and light < 20, (heavy, light)  # measured: 200 ms and 10 ms


def test_the_ratio_predictions_match_what_was_measured(runtime):
    frame = runtime.predict_frame(pd.DataFrame({"sql": [HEAVY_SQL.format(v=1)] * 2, "probes": ["[[90000, 100000]]", "[[50, 100000]]"]}), {})
    assert frame["arm"].tolist() == [1, 0]
    assert frame["ratio_arm_1"].iloc[0] < 0.5 < 1.5 < frame["ratio_arm_1"].iloc[1]


def test_an_unsure_ensemble_keeps_the_native_plan():
    from aiprim.primitives.query._runtime import decide

    # Members that disagree about which arm is faster: no arm is chosen over the native plan.
    disagree = np.array([[1.0, 0.2], [1.0, 1.9], [1.0, 0.1], [1.0, 2.0]])
    assert decide(disagree, [0, 1], z=1.0, min_gain=0.1) == 0
    # A tiny predicted gain is not worth leaving the native plan either, however sure.
    assert decide(np.array([[1.0, 0.97]] * 4), [0, 1], z=1.0, min_gain=0.1) == 0
    assert decide(np.array([[1.0, 0.3]] * 4), [0, 1], z=1.0, min_gain=0.1) == 1


def test_the_decision_rule_is_calibrated_on_held_out_queries_of_seen_templates(runtime):
    meta = runtime.meta
    assert {"uncertainty_z", "min_gain", "val_total_latency_ratio", "val_worst_query_ratio"} <= set(meta)
    assert meta["val_total_latency_ratio"] < 0.6, "on held-out parameters the rule takes the 5x faster arm"
    assert meta["val_worst_query_ratio"] <= 1.2


def _mixed_telemetry(n: int = 120, seed: int = 3):
    """One template whose parameters say nothing: arm 1 is 3x faster on most of its queries and 2.5x slower
    on one in six, at random. Leaving the native plan wins in total and loses badly on a few queries."""
    rng = np.random.default_rng(seed)
    queries, executions = [], []
    for i in range(n):
        qid, ratio = f"m{i:03d}", (2.5 if rng.random() < 1 / 6 else 0.33)
        queries.append({"query_id": qid, "template": "mixed", "sql": OTHER_SQL.format(v=i), "probes": json.dumps([[500, 100_000]])})
        for arm, r in ((0, 1.0), (1, ratio)):
            executions.append({"query_id": qid, "arm": arm, "plan": "{}", "latency_ms": 100.0 * r, "timed_out": False,
                               "rows": 1, "ts": float(i), "timeout_ms": 10_000.0})
    return {"queries": pd.DataFrame(queries),
            "arms": pd.DataFrame({"arm": np.array([0, 1], np.int32), "name": ["native", "one"], "settings": ["[]", '["x=1"]']}),
            "executions": pd.DataFrame(executions).astype({"arm": "int32", "rows": "Int64"})}


@pytest.mark.parametrize("worst", [1.5, 100.0])
def test_the_calibrated_rule_keeps_every_held_out_query_within_the_guardrail(tmp_path, worst):
    # However much a rule wins in total, one validation query beyond ``worst_regression`` (the promotion
    # guardrail) makes it inadmissible; the share of queries allowed past 1.2x is set loose to isolate that.
    rt = primitives.get("query").train_runtime(
        _mixed_telemetry(), {"max_epochs": 30, "members": 3, "hidden": 16, "lr": 0.01, "max_regression_share": 0.5,
                             "worst_regression": worst}, tmp_path)
    if worst == 1.5:
        assert rt.meta["val_worst_query_ratio"] <= 1.5
    else:  # the control: without the cap the same telemetry calibrates a rule that takes the 2.5x arm somewhere
        assert rt.meta["val_worst_query_ratio"] > 1.5 and rt.meta["val_total_latency_ratio"] < 0.8


def test_thompson_sampling_explores_what_members_prefer(runtime):
    rng = np.random.default_rng(1)
    log_pred = np.array([[0.0, 1.0], [1.0, 0.0]])  # member 0 prefers arm 0, member 1 arm 1
    picks = {runtime.sample_arm(log_pred, [0, 1], rng) for _ in range(40)}
    assert picks == {0, 1}


def test_numpy_runtime_computes_what_the_torch_model_computes():
    import torch

    from aiprim.primitives.query._model import QueryModule, export_weights
    from aiprim.primitives.query._runtime import QueryRuntime
    from aiprim.primitives.query._templates import N_FEATURES

    torch.manual_seed(0)
    module = QueryModule(n_templates=3, n_arms=4, members=3, hidden=16, depth=2)
    runtime = QueryRuntime(export_weights(module), {"native_mean": 2.0, "native_std": 1.5})
    templates = np.array([0, 2, 1])
    features = np.random.default_rng(0).normal(size=(3, N_FEATURES)).astype(np.float32)
    with torch.no_grad():
        expected = module.net(torch.from_numpy(templates), torch.from_numpy(features)).numpy()
    ratios, native_log_ms = runtime.predict(templates, features)
    np.testing.assert_allclose(ratios[..., 1:], expected[..., 1:], rtol=1e-4, atol=1e-5)
    assert (ratios[..., 0] == 0).all(), "arm 0 is the reference: its ratio is 1"
    np.testing.assert_allclose(native_log_ms, expected[..., 0] * 1.5 + 2.0, rtol=1e-4, atol=1e-5)
