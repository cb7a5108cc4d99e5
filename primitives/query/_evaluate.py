"""``QueryOptimizer.evaluate``: held-out queries measured live on the snapshot's database."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ._engines import QueryError, arms_from_table, check_read_only, engine_for_uri, engine_named
from ._common import progress as _progress
from .._report import Scores
from ._metrics import confirm_regressions, measure_workload, score as score_choices


def database_of(config: dict, purpose: str = "measure on") -> tuple[str, str]:
    """(engine name, database URI) from the snapshot's manifest (``config["manifest"]``); a relative DuckDB
    path resolves against ``config["snapshot_dir"]``."""
    manifest = config.get("manifest") or {}
    uri = manifest.get("database_uri")
    if not uri:
        raise QueryError(f"the snapshot's manifest.json names no database_uri to {purpose}")
    engine = manifest.get("engine") or engine_for_uri(uri).name
    if engine == "duckdb" and not Path(uri).is_absolute() and config.get("snapshot_dir"):
        uri = str(Path(config["snapshot_dir"]) / uri)
    return engine, uri


def score(candidates: dict, tables: dict, config: dict) -> Scores:
    """Every held-out query measured live under every arm, once; each candidate's choices and each
    peer are then scored from that one latency table, so they are compared on the same measurements."""
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
    learned = {}
    try:
        latency, timed_out, failed = measure_workload(engine, connection, uri, queries, arms, config)
        ran = ~np.isnan(latency[:, 0])
        if not ran.any():
            raise QueryError(f"none of the {len(queries)} queries could run on {engine.name}")
        queries, latency, timed_out = queries[ran].reset_index(drop=True), latency[ran], timed_out[ran]
        arm_ids = [a.arm for a in arms]
        for name, runtime in candidates.items():
            learned[name] = _learned_choices(runtime, engine, connection, queries, arm_ids)
        # Before anything is scored: a guardrail that refuses a version on one noisy sample refuses it on noise.
        confirmed = confirm_regressions(engine, connection, queries, arms, latency, timed_out,
                                        [c[0] for c in learned.values()], config)
    finally:
        connection.close()
    peer_choices = {
        "native": np.zeros(len(queries), dtype=int),
        "best_single_arm": np.full(len(queries), best_single_arm(config.get("training_tables"), latency, arm_ids)),
        "oracle": np.asarray(arm_ids)[np.nanargmin(latency, axis=1)],
    }
    scored = score_choices(latency, {**peer_choices, **{n: c[0] for n, c in learned.items()}}, arm_ids)
    candidate_metrics = {}
    for name, (chosen, overhead, predicted) in learned.items():
        metrics = scored[name]
        finished = ~timed_out & ~np.isnan(predicted)
        if finished.any():  # how far the predicted ratios to native are from the measured ones (a q-error)
            measured = latency / latency[:, :1]
            errors = np.exp(np.abs(np.log(np.maximum(predicted[finished], 1e-6)) - np.log(np.maximum(measured[finished], 1e-6))))
            metrics["ratio_error_median"] = float(np.nanmedian(errors))
        metrics["switched_share"] = float(np.mean(chosen != 0))
        metrics["planning_overhead_ratio"] = float(np.median(overhead) / np.median(latency[:, 0]))
        metrics["planning_overhead_ms"] = float(np.median(overhead))
        if "split" in queries:
            for split in sorted(queries["split"].unique()):
                mask = (queries["split"] == split).to_numpy()
                part = score_choices(latency[mask], {name: chosen[mask]}, arm_ids)[name]
                metrics.update({f"{k}_{split}": v for k, v in part.items() if k != "total_latency_ms"})
        metrics["queries_measured"] = int(len(queries))
        candidate_metrics[name] = metrics
    # The per-query table shows the first candidate (the challenger) beside native and the oracle.
    shown = next(iter(learned.values()), None)
    best = np.nanmin(latency, axis=1)
    column = {a: j for j, a in enumerate(arm_ids)}
    report_queries = []
    for i, q in enumerate(queries.itertuples()):
        row = {"query_id": q.query_id, "template": q.template, "native_ms": float(latency[i, 0]), "best_ms": float(best[i]),
               "best_arm": int(peer_choices["oracle"][i])}
        if shown is not None:
            row.update(arm=int(shown[0][i]), learned_ms=float(latency[i, column.get(int(shown[0][i]), 0)]))
        if "split" in queries:
            row["split"] = q.split
        report_queries.append(row)
    peers = {name: scored[name] for name in peer_choices} if config.get("baselines", True) else {}
    return Scores(
        candidates=candidate_metrics, peers=peers,
        lower_bounds={"total_latency_ratio": scored["oracle"]["total_latency_ratio"]},
        details={"queries": report_queries, "queries_measured": int(len(queries)),
                 "arms": [{"arm": a.arm, "name": a.name, "settings": list(a.settings)} for a in arms],
                 "failed_queries": failed, "confirmed": confirmed})


def best_single_arm(training_tables: dict | None, latency: np.ndarray, arm_ids: list[int]) -> int:
    """The one hint set a DBA would pick from the history: lowest total latency over the training
    queries that ran under every arm, never on the queries it is scored on. Only a bare evaluation
    without training telemetry falls back to choosing it on the scored queries, in hindsight."""
    from ._model import arm_outcomes

    if training_tables and "executions" in training_tables and "queries" in training_tables:
        ms, _ = arm_outcomes(training_tables["queries"], training_tables["executions"], arm_ids)
        complete = ~np.isnan(ms).any(axis=1)
        if complete.any():
            return arm_ids[int(np.argmin(ms[complete].sum(axis=0)))]
    return arm_ids[int(np.argmin(np.nansum(latency, axis=0)))]


def _learned_choices(runtime, engine, connection, queries, arm_ids):
    """The runtime's arm per query, its overhead (ms), and its predicted latency ratio of every arm to native."""
    chosen = np.zeros(len(queries), dtype=int)
    overhead = np.zeros(len(queries))
    predicted = np.full((len(queries), len(arm_ids)), np.nan)
    column = {a: j for j, a in enumerate(arm_ids)}
    for i, q in enumerate(queries.itertuples()):
        choice = runtime.consider(q.sql, connection, engine)
        chosen[i], overhead[i] = choice.arm, choice.overhead_ms
        if choice.log_ratios is not None:
            for a, ratio in zip(runtime.arm_ids, np.exp(choice.log_ratios.mean(axis=0))):
                if a in column:
                    predicted[i, column[a]] = ratio
    return chosen, overhead, predicted
