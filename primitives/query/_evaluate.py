"""``QueryOptimizer.evaluate``: held-out queries measured live on the snapshot's database."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ._engines import QueryError, arms_from_table, check_read_only, engine_for_uri, engine_named
from ._common import progress as _progress
from ._metrics import measure_workload, q_errors, score


def database_of(config: dict) -> tuple[str, str]:
    """(engine name, database URI) from the snapshot's manifest; a relative DuckDB path resolves against the snapshot."""
    manifest = config.get("manifest") or {}
    uri = manifest.get("database_uri")
    if not uri:
        raise QueryError("the snapshot's manifest.json names no database_uri to measure on")
    engine = manifest.get("engine") or engine_for_uri(uri).name
    if engine == "duckdb" and not Path(uri).is_absolute() and config.get("snapshot_dir"):
        uri = str(Path(config["snapshot_dir"]) / uri)
    return engine, uri


def evaluate(runtime, tables: dict, config: dict) -> dict:
    engine_name, uri = database_of(config)
    engine = engine_named(engine_name)
    arms = arms_from_table(tables["arms"]) if "arms" in tables else engine.default_arms()
    if not arms or arms[0].arm != 0:
        raise QueryError("arms: arm 0 (the engine's own plan) is missing")
    queries = tables["queries"]
    readable = []
    for q in queries.itertuples():
        try:
            check_read_only(q.sql)
            readable.append(True)
        except ValueError as error:
            _progress(f"query {q.query_id}: skipped: {error}")
            readable.append(False)
    queries = queries[np.asarray(readable, bool)].reset_index(drop=True)
    connection = engine.connect(uri)
    try:
        latency, timed_out, failed = measure_workload(engine, connection, uri, queries, arms, config)
        ran = ~np.isnan(latency[:, 0])
        if not ran.any():
            raise QueryError(f"none of the {len(queries)} queries could run on {engine.name}")
        queries, latency, timed_out = queries[ran].reset_index(drop=True), latency[ran], timed_out[ran]
        arm_ids = [a.arm for a in arms]
        totals = np.nansum(latency, axis=0)
        choices = {
            "native": np.zeros(len(queries), dtype=int),
            "best_single_arm": np.full(len(queries), arm_ids[int(np.argmin(totals))]),
            "oracle": np.asarray(arm_ids)[np.nanargmin(latency, axis=1)],
        }
        metrics, learned_arms, overhead, predicted = {}, None, None, None
        if runtime is not None:
            learned_arms, overhead, predicted = _learned_choices(runtime, engine, connection, queries, arm_ids)
            choices["learned"] = learned_arms
    finally:
        connection.close()
    scored = score(latency, choices, arm_ids)
    if runtime is not None:
        metrics = scored.pop("learned")
        finished = ~timed_out
        errors = q_errors(predicted[finished], latency[finished])
        if errors.size:
            metrics["q_error_median"] = float(np.median(errors))
            metrics["q_error_p95"] = float(np.percentile(errors, 95))
        metrics["planning_overhead_ratio"] = float(np.median(overhead) / np.median(latency[:, 0]))
        metrics["planning_overhead_ms"] = float(np.median(overhead))
        if "split" in queries:
            for split in sorted(queries["split"].unique()):
                mask = (queries["split"] == split).to_numpy()
                part = score(latency[mask], {"learned": learned_arms[mask]}, arm_ids)["learned"]
                metrics.update({f"{k}_{split}": v for k, v in part.items() if k != "total_latency_ms"})
    metrics["queries_measured"] = int(len(queries))
    if not config.get("baselines", True):  # re-scoring a champion: the peers were scored on these queries already
        scored = {}
    best = np.nanmin(latency, axis=1)
    column = {a: j for j, a in enumerate(arm_ids)}
    report_queries = []
    for i, q in enumerate(queries.itertuples()):
        row = {"query_id": q.query_id, "template": q.template, "native_ms": float(latency[i, 0]), "best_ms": float(best[i]),
               "best_arm": int(choices["oracle"][i])}
        if learned_arms is not None:
            row.update(arm=int(learned_arms[i]), learned_ms=float(latency[i, column.get(int(learned_arms[i]), 0)]))
        if "split" in queries:
            row["split"] = q.split
        report_queries.append(row)
    return {
        "metrics": metrics,
        "baselines": scored,
        "queries": report_queries,
        "arms": [{"arm": a.arm, "name": a.name, "settings": list(a.settings)} for a in arms],
        "failed_queries": failed,
    }


def _learned_choices(runtime, engine, connection, queries, arm_ids):
    """The runtime's arm per query, its planning overhead (ms), and its predicted latency of every arm."""
    chosen = np.zeros(len(queries), dtype=int)
    overhead = np.zeros(len(queries))
    predicted = np.full((len(queries), len(arm_ids)), np.nan)
    column = {a: j for j, a in enumerate(arm_ids)}
    for i, q in enumerate(queries.itertuples()):
        started = time.perf_counter()
        planned, plans = runtime.plan_arms(q.sql, connection, engine)
        log_pred = runtime.predict_log(plans, planned.index(0))
        chosen[i] = runtime.decide(log_pred, planned)
        overhead[i] = (time.perf_counter() - started) * 1000.0
        for a, p in zip(planned, np.exp(log_pred.mean(axis=0))):
            if a in column:
                predicted[i, column[a]] = p
    return chosen, overhead, predicted
