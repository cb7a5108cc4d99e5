"""Code tests of the query optimizer's engine layer and plan trees, against a real DuckDB."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

from aiprim.primitives.query._engines import Arm, DuckDBEngine, QueryError, check_read_only, parse_settings
from aiprim.primitives.query._plans import KINDS, kind_of, pack, parse_plan


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


def test_duckdb_plans_parse_into_trees(duck):
    engine, connection = duck
    plan = engine.plan(connection, "SELECT count(*) FROM a JOIN b ON a.i = b.i WHERE j < 5", Arm(0, "native"))
    features, left, right = parse_plan(plan)
    kinds = [KINDS[int(np.argmax(row[: len(KINDS)]))] for row in features]
    assert "hash_join" in kinds and kinds.count("seq_scan") == 2
    assert left[0] == 1 and (right >= -1).all()
    assert features[:, len(KINDS)].max() > 0  # estimated cardinalities made it in


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


def test_postgres_operator_names_map_to_shared_kinds():
    assert [kind_of(n) for n in ("Nested Loop", "Hash Join", "Merge Join", "Index Only Scan", "Bitmap Heap Scan",
                                 "Seq Scan", "Hash", "Aggregate", "Sort", "Memoize")] == [
        "nested_loop", "hash_join", "merge_join", "index_scan", "index_scan", "seq_scan", "hash_build", "aggregate",
        "sort", "materialize"]
    assert [kind_of(n) for n in ("NESTED_LOOP_JOIN", "HASH_JOIN", "PIECEWISE_MERGE_JOIN", "SEQ_SCAN", "HASH_GROUP_BY")] == [
        "nested_loop", "hash_join", "merge_join", "seq_scan", "aggregate"]


PG_PLAN = json.dumps([{"Plan": {"Node Type": "Nested Loop", "Plan Rows": 10, "Total Cost": 100.5, "Plans": [
    {"Node Type": "Seq Scan", "Plan Rows": 10, "Total Cost": 5.0},
    {"Node Type": "Index Scan", "Plan Rows": 1, "Total Cost": 0.4}]}}])


def test_numpy_runtime_computes_what_the_torch_model_computes():
    import torch

    from aiprim.primitives.query._model import QueryModule, export_weights
    from aiprim.primitives.query._runtime import QueryRuntime

    torch.manual_seed(0)
    module = QueryModule(members=3, hidden=16, depth=3, target_mean=2.0, target_std=1.5)
    runtime = QueryRuntime(export_weights(module), {"target_mean": 2.0, "target_std": 1.5})
    plans = [PG_PLAN, json.dumps({"name": "HASH_JOIN", "children": [{"name": "SEQ_SCAN", "children": []}] * 2})]
    packed = pack([parse_plan(p) for p in plans])
    with torch.no_grad():
        expected = module.net(*(torch.from_numpy(packed[k]) for k in ("features", "left", "right", "starts"))).numpy()
    np.testing.assert_allclose(runtime.predict_log(plans), expected * 1.5 + 2.0, rtol=1e-4, atol=1e-4)


def test_postgres_disable_penalty_is_not_read_as_cost():
    forced = json.dumps([{"Plan": {"Node Type": "Seq Scan", "Plan Rows": 10, "Total Cost": 1.0e10 + 35.5}}])
    plain = json.dumps([{"Plan": {"Node Type": "Seq Scan", "Plan Rows": 10, "Total Cost": 35.5}}])
    np.testing.assert_allclose(parse_plan(forced)[0], parse_plan(plain)[0])
