"""The embedded source: first round explores every arm, later rounds follow the champion (on-policy)."""

from __future__ import annotations

import numpy as np

from aiprim import primitives
from tests.conftest import query_source


def test_first_round_runs_every_arm_with_native_first(query_tables):
    tables, extra = query_tables
    executions = tables["executions"]
    per_query = executions.groupby("query_id")["arm"].apply(list)
    assert (per_query.map(lambda arms: arms[0] == 0)).all(), "arm 0 runs first: it sets the others' time limit"
    assert per_query.map(len).max() == len(tables["arms"])
    assert extra["engine"] == "duckdb" and extra["database_uri"].endswith(".duckdb")


def test_later_rounds_are_on_policy(query_tables, tmp_path_factory):
    tables, _ = query_tables
    prim = primitives.get("query")
    policy = tmp_path_factory.mktemp("policy")
    prim.train_runtime(tables, {"max_epochs": 3, "members": 3, "hidden": 16}, policy)
    again, _ = prim.generate(query_source(tmp_path_factory.getbasetemp(), policy_dir=str(policy), explore_arms=1), seed=5)
    per_query = again["executions"].groupby("query_id")["arm"].apply(list)
    assert per_query.map(lambda arms: arms[0] == 0).all()
    # native + champion's choice + a Thompson sample + one random arm: at most 4 of 6
    assert per_query.map(len).max() <= 4 and per_query.map(len).mean() < len(tables["arms"])


def test_a_runaway_arm_is_recorded_as_timed_out_not_waited_for(tmp_path_factory):
    prim = primitives.get("query")
    tables, _ = prim.generate(query_source(tmp_path_factory.getbasetemp(), timeout_ms=1.0, min_timeout_ms=1.0,
                                           queries_per_template=1), seed=5)
    executions = tables["executions"]
    assert executions["timed_out"].any()
    assert executions.loc[executions["timed_out"], "latency_ms"].isna().all()
    assert np.isfinite(executions.loc[~executions["timed_out"], "latency_ms"]).all()


def test_a_users_query_log_is_run_on_the_users_database(query_tables, project, tmp_path):
    """`--source DIR` with only queries.parquet and a manifest naming the database: aiprim gathers the telemetry."""
    import json

    import pandas as pd

    from aiprim.flows import config, steps
    from aiprim.primitives._snapshot import read_manifest, read_tables

    tables, extra = query_tables
    log = tables["queries"][["query_id", "template", "sql"]].head(6)
    folder = tmp_path / "my-log"
    folder.mkdir()
    log.to_parquet(folder / "queries.parquet")
    (folder / "manifest.json").write_text(json.dumps({"primitive": "query", "schema_version": 1, "engine": "duckdb",
                                                      "database_uri": extra["database_uri"], "tables": {}}))
    directory = steps.snapshot("query", config.load(), source=str(folder))
    gathered = read_tables(directory, primitives.get("query").schema)
    assert set(gathered["executions"]["query_id"]) == set(log["query_id"])
    assert (gathered["executions"].groupby("query_id")["arm"].first() == 0).all()
    assert gathered["queries"]["probes"].map(json.loads).map(len).min() >= 1
    manifest = read_manifest(directory)
    assert manifest["database_uri"] == extra["database_uri"] and "telemetry gathered by aiprim" in manifest["source"]
    assert list(pd.read_parquet(folder / "queries.parquet").columns) == ["query_id", "template", "sql"], "the user's files stay as they were"
    assert steps.validate("query", directory, config.load()).ok


def test_a_chosen_arm_past_the_guardrail_on_one_slow_sample_is_re_measured(query_tables):
    """One slow sample (injected here: 10x the arm's measured latency) would break the worst-query guardrail;
    the confirmation re-measures that cell beside native, and the real ratio replaces it."""
    from aiprim.primitives.query._engines import engine_named
    from aiprim.primitives.query._metrics import confirm_regressions, measure_workload

    tables, extra = query_tables
    engine = engine_named("duckdb")
    arms = engine.default_arms()
    queries = tables["queries"].head(12).reset_index(drop=True)
    cfg = {"repeats": 3, "warmup": 1, "max_query_regression": 1.5, "confirm_repeats": 5}
    connection = engine.connect(extra["database_uri"])
    try:
        latency, timed_out, _ = measure_workload(engine, connection, extra["database_uri"], queries, arms, cfg)
        ratio = latency[:, 1:] / latency[:, :1]
        # A (query, arm) that is about as fast as native and takes long enough to time (not a sub-millisecond query).
        candidates = [(i, j + 1) for i, j in zip(*np.nonzero((ratio < 1.1) & ~timed_out[:, 1:])) if latency[i, 0] > 1.0]
        assert candidates, "no arm within 10% of native on a query over 1 ms: pick other queries"
        i, j = candidates[0]
        injected = 10.0 * ratio[i, j - 1]
        latency[i, j] *= 10.0
        chosen = np.zeros(len(queries), dtype=int)
        chosen[i] = arms[j].arm
        confirmed = confirm_regressions(engine, connection, queries, arms, latency, timed_out, [chosen], cfg)
    finally:
        connection.close()
    [cell] = confirmed
    assert cell["query_id"] == queries["query_id"][i] and cell["arm"] == arms[j].arm
    assert abs(cell["ratio_before"] - injected) < 1e-9
    assert cell["ratio_after"] == latency[i, j] / latency[i, 0] < 1.5
    assert confirm_regressions(engine, None, queries, arms, latency, timed_out, [chosen], cfg) == []  # nothing left past it
