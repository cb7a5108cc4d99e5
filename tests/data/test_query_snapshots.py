"""Data tests of the query optimizer's telemetry: each bad input of the issue gets one readable
line naming it, the snapshot is quarantined, and nothing is trained or promoted from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiprim.flows.cli import main
from tests.data.edits import accept_reference, edit as _edit, set_cell as _set


def _write(root: Path, tables: dict, extra: dict) -> Path:
    from aiprim import primitives
    from aiprim.primitives._snapshot import write_snapshot

    prim = primitives.get("query")
    return write_snapshot("query", prim.schema, tables, root, source="tests", extra=extra)


CASES = {
    "execution of an unknown query": (lambda t: _edit(t, "executions", _set("query_id", 0, "no-such-query")),
                                      "executions: 1 rows break the rule: query_id names a query of queries.parquet (first: query_id 'no-such-query')"),
    "execution of an unknown arm": (lambda t: _edit(t, "executions", lambda f: f.assign(arm=f["arm"].where(f.index != 2, 42))),
                                    "arm names an arm of arms.parquet"),
    "a write statement": (lambda t: _edit(t, "queries", _set("sql", 1, "DELETE FROM title")),
                          "queries: 1 rows break the rule: sql is exactly one read-only statement"),
    "two statements": (lambda t: _edit(t, "queries", _set("sql", 0, "SELECT 1; SELECT 2")), "sql is exactly one read-only statement"),
    "settings that are not a JSON list": (lambda t: _edit(t, "arms", _set("settings", 2, "enable_nestloop=off")),
                                          "settings is a JSON list"),
    "negative latency": (lambda t: _edit(t, "executions", _set("latency_ms", 0, -3.0)), "column latency_ms: 1 rows out of range"),
    "duplicate query id": (lambda t: _edit(t, "queries", _set("query_id", 1, t["queries"]["query_id"][0])),
                           "column query_id: 2 rows are duplicates"),
    "plan that is not JSON": (lambda t: _edit(t, "executions", _set("plan", 0, "Hash Join (cost=1..2)")), "plan is the engine's plan as JSON"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_query_telemetry_is_rejected(case, project, query_tables, capsys):
    tables, extra = query_tables
    make, expected = CASES[case]
    directory = _write(project / "data" / "snapshots", make(tables), extra)
    code = main(["validate", "query", str(directory)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err
    assert err.startswith("aiprim: error: query snapshot") and expected in err, err
    assert not directory.exists() and list((project / "data" / "quarantine" / "query").iterdir())


def test_manifest_must_name_the_database(project, query_tables, capsys):
    tables, extra = query_tables
    directory = _write(project / "data" / "snapshots", tables, {"engine": "duckdb"})
    assert main(["validate", "query", str(directory)]) != 0
    assert "manifest.json: missing key 'database_uri'" in capsys.readouterr().err


def test_a_failed_snapshot_never_reaches_training(project, query_tables, capsys):
    tables, extra = query_tables
    bad = _edit(tables, "executions", _set("query_id", 0, "ghost"))
    directory = _write(project / "data" / "snapshots", bad, extra)
    assert main(["train", "query", str(directory)]) != 0
    assert "query_id names a query of queries.parquet (first: query_id 'ghost')" in capsys.readouterr().err
    assert _no_versions()


def _no_versions() -> bool:
    from aiprim.registry import configure

    return not configure().search_model_versions("name='aiprim-query'")


def test_valid_snapshot_is_accepted(project, query_tables, capsys):
    tables, extra = query_tables
    directory = _write(project / "data" / "snapshots", tables, extra)
    assert main(["validate", "query", str(directory), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"], report


def test_same_workload_on_a_busier_machine_is_accepted(project, query_tables, capsys):
    tables, extra = query_tables
    accept_reference("query", _write(project / "data" / "snapshots", tables, extra), capsys)
    busier = _edit(tables, "executions", lambda f: f.assign(latency_ms=f["latency_ms"] * 3.0))
    directory = _write(project / "data" / "snapshots", busier, extra)
    assert main(["validate", "query", str(directory)]) == 0, capsys.readouterr().err
    assert directory.exists()


def test_changed_template_mix_is_rejected(project, query_tables, capsys):
    tables, extra = query_tables
    accept_reference("query", _write(project / "data" / "snapshots", tables, extra), capsys)
    kept = sorted(set(tables["queries"]["template"]))[:2]
    queries = tables["queries"][tables["queries"]["template"].isin(kept)].reset_index(drop=True)
    executions = tables["executions"][tables["executions"]["query_id"].isin(queries["query_id"])].reset_index(drop=True)
    directory = _write(project / "data" / "snapshots", {**tables, "queries": queries, "executions": executions}, extra)
    assert main(["validate", "query", str(directory)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "table queries, column template: drift: category shares moved by" in err, err
    assert not directory.exists()


def test_a_reference_of_an_older_version_is_not_compared(project, query_tables, capsys):
    """Accepted files of older versions hold latency statistics: they are not a workload shape to compare with."""
    tables, extra = query_tables
    accepted = project / "data" / "accepted" / "query.json"
    accepted.parent.mkdir(parents=True)
    accepted.write_text(json.dumps({"snapshot": "elsewhere", "stats": {"executions": {"latency_ms": {"mean": 0.001, "median": 0.001}}}}))
    assert main(["validate", "query", str(_write(project / "data" / "snapshots", tables, extra))]) == 0, capsys.readouterr().err
    assert "row_count" in json.loads(accepted.read_text())["stats"]["executions"]
