"""The embedded telemetry source: build the workload's database, draw queries, run them under arms.

The first round (no champion) runs every query under every arm. Later rounds
are on-policy, the way Bao gathers experience: every query runs natively
(arm 0, the reference), under the champion's choice, under a Thompson sample
of the champion's ensemble, and under ``explore_arms`` random arms; a query
of a template the champion has not learned runs under every arm, so the
template gains its own history. Every query's template fingerprint and
selectivity probes are recorded beside it (``queries.fingerprint``,
``queries.probes``).

Each arm gets a time limit of ``timeout_factor`` times the query's native
latency (at least ``min_timeout_ms``, at most ``timeout_ms``): a runaway plan is
cancelled and recorded as timed out, and never stalls the snapshot.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aiprim._console import progress_bar

from ._common import arm_limit_ms, progress as _progress
from ._engines import Arm, Engine, QueryError, engine_named, redact
from ._workloads import TEMPLATES, WORKLOADS, build_duckdb, load_postgres, workload_tables

DEFAULTS = {
    "engine": "duckdb",
    "database_uri": None,  # None: a DuckDB file built under database_dir; a postgresql:// DSN is loaded when load is true
    "load": True,
    "workloads": list(WORKLOADS),
    "skewed_scale": 1.0,
    "tpch_scale": 0.1,
    "queries_per_template": 16,
    "timeout_ms": 3000.0,
    "timeout_factor": 4.0,
    "min_timeout_ms": 50.0,
    "explore_arms": 1,
    "database_dir": "data/databases",
    "threads": None,
    "database_seed": 0,   # the database is the deployment: rounds draw new queries (the round's seed) on the same data
}


def database_key(cfg: dict, seed: int) -> str:
    recipe = {k: cfg[k] for k in ("workloads", "skewed_scale", "tpch_scale")} | {"seed": seed, "format": 1}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def prepare_database(cfg: dict, seed: int) -> str:
    """The database URI of the workload: a cached DuckDB file, or a PostgreSQL server loaded with it."""
    if cfg["engine"] == "duckdb" and not cfg.get("database_uri"):
        path = (Path(cfg["database_dir"]) / f"query-{database_key(cfg, seed)}.duckdb").resolve()
        if not path.exists():  # deterministic in (workloads, scales, seed): build once, reuse
            started = time.perf_counter()
            tables, _ = workload_tables(cfg["workloads"], cfg["skewed_scale"], cfg["tpch_scale"], seed)
            build_duckdb(path, tables)
            _progress(f"built {path.name} ({sum(len(t) for t in tables.values()):,} rows) in {time.perf_counter() - started:.1f}s")
        return str(path)
    uri = cfg.get("database_uri")
    if not uri:
        raise QueryError(f"engine {cfg['engine']}: source.database_uri is required (a postgresql:// DSN)")
    if cfg["engine"] == "postgres" and cfg.get("load", True):
        started = time.perf_counter()
        tables, indexes = workload_tables(cfg["workloads"], cfg["skewed_scale"], cfg["tpch_scale"], seed)
        try:
            load_postgres(uri, tables, indexes)
        except Exception as error:
            raise QueryError(f"database {redact(uri)}: cannot load the workload ({str(error).splitlines()[0]})") from None
        _progress(f"loaded the workload into {redact(uri)} in {time.perf_counter() - started:.1f}s")
    return uri


def draw_queries(workloads, per_template: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for template in TEMPLATES.values():
        if template.workload in workloads:
            for i in range(per_template):
                rows.append({"query_id": f"{template.name}-{i:03d}", "template": template.name, "sql": template.draw(rng)})
    return pd.DataFrame(rows, columns=["query_id", "template", "sql"])


def load_policy(directory):
    if not directory:
        return None
    from ._runtime import QueryRuntime

    return QueryRuntime.load(Path(directory))


def arms_to_run(policy, arm_ids: list[int], sql: str, engine, connection, explore: int, rng) -> list[int]:
    """Arm 0 first, then the champion's choice, a Thompson sample, and random exploration.

    Every arm for a template the champion has not learned (and without a champion)."""
    if policy is None:
        return list(arm_ids)
    choice = policy.consider(sql, connection, engine, explore=True)
    if choice.log_ratios is None:
        return list(arm_ids)
    known = [a for a in policy.arm_ids if a in arm_ids]
    columns = [policy.arm_ids.index(a) for a in known]
    predictions = choice.log_ratios[:, columns]
    chosen = [0, choice.arm, policy.sample_arm(predictions, known, rng)]
    others = [a for a in arm_ids if a not in chosen]
    chosen += list(rng.choice(others, size=min(explore, len(others)), replace=False)) if others else []
    return list(dict.fromkeys(int(a) for a in chosen))


def run_workload(engine: Engine, connection, queries: pd.DataFrame, arms: list[Arm], cfg: dict, policy=None,
                 seed: int = 0) -> pd.DataFrame:
    """Executions of every query under the arms the policy picks; bad queries and arms are reported and skipped."""
    rng = np.random.default_rng(seed + 7)
    by_id = {a.arm: a for a in arms}
    rows, started, problems = [], time.perf_counter(), 0
    def executions() -> str:
        return f"{len(rows)} executions in {time.perf_counter() - started:.1f}s"

    running = progress_bar("query", "running queries", len(queries), unit="query", lines_every=20)
    arm_ids = list(by_id)
    for q in running.iterate(queries.itertuples(), executions):
        plans = {}
        for arm in arms:
            try:
                plans[arm.arm] = engine.plan(connection, q.sql, arm)
            except QueryError as error:
                problems += 1
                _progress(f"query {q.query_id}, arm {arm.arm}: {error}")
                if arm.arm == 0:
                    break
        if 0 not in plans:
            continue
        limit = float(cfg["timeout_ms"])
        for arm_id in arms_to_run(policy, arm_ids, q.sql, engine, connection, int(cfg["explore_arms"]), rng):
            if arm_id not in plans:
                continue
            try:
                ex = engine.run(connection, q.sql, by_id[arm_id], limit)
            except QueryError as error:
                problems += 1
                _progress(f"query {q.query_id}, arm {arm_id}: {error}")
                continue
            rows.append({"query_id": q.query_id, "arm": arm_id, "plan": plans[arm_id], "latency_ms": ex.latency_ms,
                         "timed_out": ex.timed_out, "rows": ex.rows, "ts": time.perf_counter() - started, "timeout_ms": limit})
            if arm_id == 0:  # the native latency sets the other arms' limit
                limit = arm_limit_ms(ex.latency_ms if ex.latency_ms is not None else float(cfg["timeout_ms"]), cfg)
    if problems:
        _progress(f"{problems} query/arm combinations could not run (named above)")
    frame = pd.DataFrame(rows, columns=["query_id", "arm", "plan", "latency_ms", "timed_out", "rows", "ts", "timeout_ms"])
    return frame.astype({"arm": "int32", "latency_ms": "float64", "timed_out": "bool", "rows": "Int64", "ts": "float64",
                         "timeout_ms": "float64"})


def arms_frame(arms: list[Arm]) -> pd.DataFrame:
    return pd.DataFrame({"arm": np.array([a.arm for a in arms], dtype=np.int32), "name": [a.name for a in arms],
                         "settings": [a.settings_json() for a in arms]})


def probe_queries(engine: Engine, connection, queries: pd.DataFrame) -> pd.DataFrame:
    """The queries with their template fingerprint and selectivity probes ([[rows, table rows], ...] as JSON)."""
    from ._templates import Prober

    prober, prints, probes = Prober(engine.name), [], []
    for sql in queries["sql"]:
        try:
            template, counts = prober.measure(sql, connection)
        except Exception as error:  # a probe the engine rejects: the query keeps its template, without probes
            _progress(f"probe failed ({str(error).splitlines()[0] if str(error) else type(error).__name__}); the query has no probes")
            template, counts = prober.template(sql)[0], []
        prints.append(template)
        probes.append(json.dumps([list(c) for c in counts]))
    return queries.assign(fingerprint=prints, probes=probes)


def generate(config: dict, seed: int) -> tuple[dict[str, pd.DataFrame], dict]:
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None or k == "database_uri"}}
    engine = engine_named(cfg["engine"], **({"threads": cfg["threads"]} if cfg["engine"] == "duckdb" else {}))
    uri = prepare_database(cfg, int(cfg["database_seed"]))
    queries = draw_queries(cfg["workloads"], int(cfg["queries_per_template"]), np.random.default_rng(seed))
    arms = engine.default_arms()
    policy = load_policy(config.get("policy_dir"))
    _progress(f"running {len(queries)} queries on {engine.name} "
              f"({'all ' + str(len(arms)) + ' arms' if policy is None else 'on-policy: champion + exploration'})")
    connection = engine.connect(uri)
    try:
        queries = probe_queries(engine, connection, queries)
        executions = run_workload(engine, connection, queries, arms, cfg, policy, seed)
    finally:
        connection.close()
    tables = {"queries": queries, "arms": arms_frame(arms), "executions": executions}
    return tables, {"engine": engine.name, "database_uri": uri}


def gather_on(queries: pd.DataFrame, manifest: dict, config: dict) -> tuple[dict[str, pd.DataFrame], dict]:
    """Telemetry of a user's own queries on the user's own database (``aiprim run --source DIR`` where DIR
    holds ``queries.parquet`` and a manifest naming ``engine`` and ``database_uri``): every arm without a
    champion, on-policy with one."""
    from ._evaluate import database_of

    engine_name, uri = database_of({"manifest": manifest, "snapshot_dir": config.get("snapshot_dir")}, "gather telemetry on")
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS and v is not None}}
    engine = engine_named(engine_name, **({"threads": cfg["threads"]} if engine_name == "duckdb" else {}))
    arms = engine.default_arms()
    policy = load_policy(config.get("policy_dir"))
    queries = queries[["query_id", "template", "sql"]].reset_index(drop=True)
    _progress(f"gathering telemetry of {len(queries)} queries on {engine.name} at {redact(uri)} "
              f"({'all ' + str(len(arms)) + ' arms' if policy is None else 'on-policy: champion + exploration'})")
    connection = engine.connect(uri)
    try:
        queries = probe_queries(engine, connection, queries)
        executions = run_workload(engine, connection, queries, arms, cfg, policy, int(config.get("seed", 0)))
    finally:
        connection.close()
    return {"queries": queries, "arms": arms_frame(arms), "executions": executions}, {"engine": engine.name, "database_uri": uri}
