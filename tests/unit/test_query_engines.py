"""Code tests of the query optimizer's engine layer, template fingerprints and selectivity probes, against a real DuckDB."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

from aiprim.primitives.query._engines import Arm, DuckDBEngine, QueryError, check_read_only, parse_settings
from aiprim.primitives.query._templates import Prober, fingerprint, probes_of, split_literals


@pytest.mark.parametrize("sql", [
    "SELECT 1", "  select count(*) from t;", "WITH x AS (SELECT 1) SELECT * FROM x",
    "SELECT 'delete from t' AS s -- drop table t", "/* update */ SELECT 2",
])
def test_read_only_statements_pass(sql):
    assert check_read_only(sql) == sql.strip().rstrip(";").strip()


@pytest.mark.parametrize("sql, reason", [
    ("DELETE FROM t", "DELETE statement is not read-only"),
    ("SELECT 1; SELECT 2", "2 statements"),
    ("WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone", "found DELETE"),
    ("DROP TABLE t", "DROP statement"),
    ("   ", "empty statement"),
    ("SELECT 1; SET enable_nestloop = off", "2 statements"),
])
def test_writes_and_batches_are_refused(sql, reason):
    with pytest.raises(ValueError, match=reason):
        check_read_only(sql)


def test_settings_are_checked_words_not_sql():
    assert parse_settings('["enable_nestloop=off", "disabled_optimizers=join_order,build_side_probe_side"]') == [
        ("enable_nestloop", "off"), ("disabled_optimizers", "join_order,build_side_probe_side")]
    for bad in ('{"a": 1}', '["no_equals"]', '["x=1\'; DROP TABLE t; --"]', "not json"):
        with pytest.raises(ValueError):
            parse_settings(bad)


@pytest.fixture(scope="module")
def duck(tmp_path_factory):
    path = tmp_path_factory.mktemp("duck") / "t.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE a AS SELECT range AS i, range % 100 AS j FROM range(200000)")
    con.execute("CREATE TABLE b AS SELECT range AS i, range % 7 AS k FROM range(50000)")
    con.close()
    engine = DuckDBEngine()
    connection = engine.connect(str(path))
    yield engine, connection
    connection.close()


def test_duckdb_plans_are_json(duck):
    engine, connection = duck
    plan = engine.plan(connection, "SELECT count(*) FROM a JOIN b ON a.i = b.i WHERE j < 5", Arm(0, "native"))
    assert "HASH_JOIN" in plan and isinstance(json.loads(plan), (list, dict))


def test_a_template_is_the_sql_without_its_constants():
    sql = "SELECT COUNT(*) FROM t1 t JOIN u ON u.id = t.u_id WHERE t.x = 15 AND u.name = 'it''s' AND t.y > 2.5"
    skeleton, values = split_literals(sql)
    assert skeleton == "SELECT COUNT(*) FROM t1 t JOIN u ON u.id = t.u_id WHERE t.x = ? AND u.name = ? AND t.y > ?"
    assert values == ["15", "'it''s'", "2.5"]
    assert fingerprint(sql) == fingerprint(sql.replace("15", "7").replace("2.5", "9"))
    assert fingerprint(sql) != fingerprint(sql.replace("t.y >", "t.y <"))


def test_probes_count_each_tables_constant_predicates_and_those_implied_by_joins(duck):
    engine, connection = duck
    sql = "SELECT count(*) FROM a JOIN b ON a.i = b.i WHERE a.j < 5 AND b.k = 3 AND b.i = 4"
    probes = probes_of(sql)
    assert [p.table for p in probes] == ["a", "b"]
    # b.i = 4 and a.i = b.i: the probe of a sees a.i = 4 too, as a planner's equivalence classes do.
    assert "a.i = '__aiprim_2__'" in probes[0].count_sql.replace("(", "").replace(")", "")
    prober = Prober("duckdb")
    template, counts = prober.measure(sql, connection)
    assert template == fingerprint(sql)
    assert counts == [(1, 200_000), (0, 50_000)]  # a: i = 4 and j < 5 (j = 4); b: k = 3 and i = 4 (4 % 7 = 4)
    # Another constant tuple is counted afresh; the same one comes from the cache.
    assert prober.measure(sql.replace("b.k = 3", "b.k = 4"), connection)[1] == [(1, 200_000), (1, 50_000)]
    assert len(prober.counts) == 3 and len(prober.plans) == 1


def test_a_statement_sqlglot_cannot_read_has_no_probes():
    assert probes_of("SELECT FROM WHERE ((") == ()
    assert probes_of("WITH x AS (SELECT 1) SELECT * FROM x") == ()


def test_runaway_arm_is_cancelled_not_waited_for(duck):
    engine, connection = duck
    ex = engine.run(connection, "SELECT count(*) FROM a a1, a a2 WHERE a1.i + a2.i = 7", Arm(0, "native"), timeout_ms=200)
    assert ex.timed_out and ex.latency_ms is None
    # the connection is still usable afterwards
    assert engine.run(connection, "SELECT count(*) FROM b", Arm(0, "native"), 5000).rows == 1


def test_an_arm_the_engine_rejects_is_named(duck):
    engine, connection = duck
    with pytest.raises(QueryError, match=r"arm 9 \(bogus\): the engine rejects its settings"):
        engine.plan(connection, "SELECT 1", Arm(9, "bogus", ("no_such_setting=1",)))
    with pytest.raises(QueryError, match="cannot plan"):
        engine.plan(connection, "SELECT FROM WHERE", Arm(0, "native"))


def test_missing_database_is_named(tmp_path):
    with pytest.raises(QueryError, match="nope.duckdb: DuckDB file not found"):
        DuckDBEngine().connect(str(tmp_path / "nope.duckdb"))


