"""Data tests: every bad input of the issue is rejected with one readable line,
the snapshot is quarantined, and a valid snapshot is accepted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiprim.flows.cli import main
from tests.conftest import write_balancer_snapshot
from tests.data.edits import edit as _edit, set_cell as _set


VALUE_CASES = {
    "missing column": (lambda t: _edit(t, "requests", lambda f: f.drop(columns=["tenant"])), "requests, column tenant: missing"),
    "NaN cost": (lambda t: _edit(t, "requests", _set("cost_cpu", 3, np.nan)), "requests, column cost_cpu: 1 rows are null"),
    "negative cost": (lambda t: _edit(t, "requests", _set("cost_io", 5, -1.0)), "requests, column cost_io: 1 rows out of range"),
    "negative capacity": (lambda t: _edit(t, "servers", _set("cap_mem", 0, -4.0)), "servers, column cap_mem: 1 rows out of range"),
    "zero capacity": (lambda t: _edit(t, "servers", _set("cap_io", 1, 0.0)), "servers, column cap_io: 1 rows out of range (must be > 0)"),
    "duplicate server_id": (lambda t: _edit(t, "servers", _set("server_id", 1, "srv-0000")), "servers, column server_id: 2 rows are duplicates"),
    "replica without group": (
        lambda t: _edit(t, "requests", lambda f: f.assign(replica=pd.array([0] + [None] * (len(f) - 1), dtype="Int32"), anti_affinity_group=None)),
        "replica is set exactly when anti_affinity_group is set",
    ),
    "empty requests": (lambda t: _edit(t, "requests", lambda f: f.iloc[:0]), "requests: 0 rows, at least 1 required"),
}


def _validate(directory: Path, capsys) -> tuple[int, str]:
    code = main(["validate", "balancer", str(directory)])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("case", sorted(VALUE_CASES))
def test_bad_values_are_rejected_and_quarantined(case, project, balancer_tables, capsys):
    make, expected = VALUE_CASES[case]
    directory = write_balancer_snapshot(project / "data" / "snapshots", make(balancer_tables))
    code, err = _validate(directory, capsys)
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert err.startswith("aiprim: error: balancer snapshot") and expected in err, err
    assert not directory.exists(), "a rejected snapshot leaves the store"
    assert list((project / "data" / "quarantine" / "balancer").iterdir())


def _break_file(directory: Path, how: str) -> None:
    path = directory / "requests.parquet"
    if how == "missing table":
        path.unlink()
    elif how == "truncated parquet":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        _rehash(directory, "requests")  # the hash matches: the file itself is bad
    elif how == "wrong type":
        servers = pq.read_table(directory / "servers.parquet").to_pandas()
        servers["cap_cpu"] = servers["cap_cpu"].astype(str)
        pq.write_table(pa.Table.from_pandas(servers, preserve_index=False), directory / "servers.parquet")
        _rehash(directory, "servers")
    elif how == "nullable ints read back as floats":  # what a pandas round trip does to replica
        requests = pq.read_table(path).to_pandas()
        pq.write_table(pa.Table.from_pandas(requests, preserve_index=False), path)
        _rehash(directory, "requests")
    elif how == "integer too large for a float":
        table = pq.read_table(directory / "servers.parquet")
        caps = pa.array([2**53 + 1] * table.num_rows, pa.int64())
        table = table.set_column(table.column_names.index("cap_cpu"), "cap_cpu", caps)
        pq.write_table(table, directory / "servers.parquet")
        _rehash(directory, "servers")
    elif how == "sha mismatch":
        table = pq.read_table(path)
        pq.write_table(table.slice(0, table.num_rows - 1), path)


def _rehash(directory: Path, table: str) -> None:
    from aiprim.primitives._snapshot import sha256_file

    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["tables"][table]["sha256"] = sha256_file(directory / f"{table}.parquet")
    (directory / "manifest.json").write_text(json.dumps(manifest))


FILE_CASES = {
    "wrong type": "table servers, column cap_cpu: type large_string, expected float64",
    "missing table": "table requests: missing (requests.parquet not found)",
    "truncated parquet": "table requests: unreadable Parquet file",
    "sha mismatch": "table requests: sha256 does not match manifest.json",
    "nullable ints read back as floats": "table requests, column replica: type double, expected int32 (pandas reads a "
                                         "nullable integer column as floats: write it back as Int32)",
    "integer too large for a float": "table servers, column cap_cpu: Integer value 9007199254740993 not in range",
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_files_are_rejected_and_quarantined(case, balancer_snapshot, project, capsys):
    _break_file(balancer_snapshot, case)
    code, err = _validate(balancer_snapshot, capsys)
    assert code != 0 and len(err.splitlines()) == 1
    assert FILE_CASES[case] in err, err
    assert not balancer_snapshot.exists()


def test_drift_past_threshold_is_rejected(project, balancer_tables, capsys):
    first = write_balancer_snapshot(project / "data" / "snapshots", balancer_tables)
    assert _validate(first, capsys)[0] == 0
    drifted = _edit(balancer_tables, "requests", lambda f: f.assign(cost_mem=f["cost_mem"] * 3.0))
    second = write_balancer_snapshot(project / "data" / "snapshots", drifted)
    code, err = _validate(second, capsys)
    assert code != 0 and "column cost_mem: drift" in err, err
    assert "Data Docs: " in err and Path(err.split("Data Docs: ")[1].split(";")[0]).exists()


def _accept_reference(project, tables, capsys) -> None:
    reference = write_balancer_snapshot(project / "data" / "snapshots", tables)
    assert _validate(reference, capsys)[0] == 0


def test_busier_fleet_with_the_same_workload_is_accepted(project, balancer_tables, capsys):
    _accept_reference(project, balancer_tables, capsys)
    busier = _edit(balancer_tables, "requests", lambda f: f.assign(latency_ms=f["latency_ms"] * 3.0))
    code, err = _validate(write_balancer_snapshot(project / "data" / "snapshots", busier), capsys)
    assert code == 0, err


def test_changed_class_mix_is_rejected(project, balancer_tables, capsys):
    _accept_reference(project, balancer_tables, capsys)
    relabelled = _edit(balancer_tables, "requests", lambda f: f.assign(request_class="web"))
    code, err = _validate(write_balancer_snapshot(project / "data" / "snapshots", relabelled), capsys)
    assert code != 0 and len(err.splitlines()) == 1, err
    assert "table requests, column request_class: drift: category shares moved by" in err, err
    assert "largest change: web" in err, err


def test_row_counts_drift_only_past_a_large_factor(project, balancer_tables, capsys):
    _accept_reference(project, balancer_tables, capsys)
    # One request in 200 is not the same workload: a truncated export, or another system's log.
    sliver = _edit(balancer_tables, "requests", lambda f: f.iloc[::200].reset_index(drop=True))
    code, err = _validate(write_balancer_snapshot(project / "data" / "snapshots", sliver), capsys)
    assert code != 0 and len(err.splitlines()) == 1, err
    assert f"table requests: drift: {len(sliver['requests'])} rows against {len(balancer_tables['requests'])}" in err, err
    # A quarter of the requests (a smaller profile, a shorter export) is.
    quarter = _edit(balancer_tables, "requests", lambda f: f.iloc[::4].reset_index(drop=True))
    code, err = _validate(write_balancer_snapshot(project / "data" / "snapshots", quarter), capsys)
    assert code == 0, err


def test_valid_snapshot_is_accepted(balancer_snapshot, project, capsys):
    code, _ = _validate(balancer_snapshot, capsys)
    assert code == 0
    assert balancer_snapshot.exists()
    accepted = json.loads((project / "data" / "accepted" / "balancer.json").read_text())
    assert accepted["snapshot"] == str(balancer_snapshot)


def test_narrower_numbers_are_widened_to_the_contract_types(project, balancer_tables, capsys):
    """Integer costs and capacities (int64, uint16), int8 replicas: values the contract's types hold exactly,
    accepted and read as those types."""
    from aiprim import primitives
    from aiprim.primitives._snapshot import read_tables

    directory = write_balancer_snapshot(project / "data" / "snapshots", balancer_tables)
    requests = pq.read_table(directory / "requests.parquet")
    for name, type_ in (("cost_cpu", pa.int64()), ("replica", pa.int8())):
        index = requests.column_names.index(name)
        values = pa.compute.round(requests.column(name)) if name == "cost_cpu" else requests.column(name)
        requests = requests.set_column(index, pa.field(name, type_), values.cast(type_))
    pq.write_table(requests, directory / "requests.parquet")
    servers = pq.read_table(directory / "servers.parquet")
    index = servers.column_names.index("cap_mem")
    servers = servers.set_column(index, pa.field("cap_mem", pa.uint16()), pa.compute.round(servers.column("cap_mem")).cast(pa.uint16()))
    pq.write_table(servers, directory / "servers.parquet")
    _rehash(directory, "requests")
    _rehash(directory, "servers")
    code, err = _validate(directory, capsys)
    assert code == 0, err
    frames = read_tables(directory, primitives.get("balancer").schema)
    assert str(frames["requests"]["cost_cpu"].dtype) == "float64" and str(frames["servers"]["cap_mem"].dtype) == "float64"
    assert str(frames["requests"]["replica"].dtype) == "Int32"
    expected = balancer_tables["requests"]["cost_cpu"].round().to_numpy()
    assert (frames["requests"]["cost_cpu"].to_numpy() == expected).all()


def test_snapshot_outside_the_store_is_copied_not_moved(tmp_path_factory, project, balancer_tables, capsys):
    outside = write_balancer_snapshot(tmp_path_factory.mktemp("users-own"), _edit(balancer_tables, "requests", _set("cost_cpu", 0, -1.0)))
    (outside / "notes").mkdir()
    (outside / "notes" / "big.bin").write_bytes(b"0" * 1024)
    code, _ = _validate(outside, capsys)
    assert code != 0
    assert outside.exists(), "the user's own files are never moved"
    [copy] = list((project / "data" / "quarantine" / "balancer").iterdir())
    assert sorted(p.name for p in copy.iterdir()) == ["manifest.json", "requests.parquet", "servers.parquet"]


def test_snapshot_ids_are_content_addressed(project, balancer_tables):
    a = write_balancer_snapshot(project / "s", balancer_tables)
    b = write_balancer_snapshot(project / "s", balancer_tables)
    c = write_balancer_snapshot(project / "s", _edit(balancer_tables, "requests", _set("cost_cpu", 0, 9.0)))
    assert a == b and a != c


def test_cli_error_has_no_traceback(balancer_snapshot, project):
    (balancer_snapshot / "servers.parquet").unlink()
    result = subprocess.run([sys.executable, "-m", "aiprim.flows.cli", "validate", "balancer", str(balancer_snapshot)],
                            capture_output=True, text=True, env={**__import__("os").environ})
    assert result.returncode != 0
    assert result.stderr.strip() .count("\n") == 0 and "Traceback" not in result.stderr
    assert "table servers: missing" in result.stderr


def test_an_import_that_does_not_read_is_quarantined(tmp_path_factory, project, balancer_tables, capsys):
    outside = write_balancer_snapshot(tmp_path_factory.mktemp("users-own"), balancer_tables)
    (outside / "servers.parquet").unlink()
    code = main(["snapshot", "balancer", "--source", str(outside)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err[-1].startswith("aiprim: error: ") and "table servers: missing" in err[-1], err
    assert "quarantined in" in err[-1], err
    assert not list((project / "data" / "snapshots" / "balancer").iterdir()), "no unreadable copy stays in the store"
    [copy] = list((project / "data" / "quarantine" / "balancer").iterdir())
    assert sorted(p.name for p in copy.iterdir()) == ["manifest.json", "requests.parquet"]
    assert (outside / "requests.parquet").exists(), "the user's own files are never moved"


def test_a_source_names_the_primitives_it_holds(tmp_path_factory, project, balancer_tables):
    from aiprim.flows import config, steps
    from aiprim.primitives._snapshot import SnapshotError

    folder = tmp_path_factory.mktemp("telemetry")
    one = write_balancer_snapshot(folder, balancer_tables)  # folder/balancer/<id>
    assert steps.primitives_in_source(str(one)) == ["balancer"]
    assert steps.primitives_in_source(str(folder / "nothing-here")) is None
    (folder / "per-primitive").mkdir()
    one.rename(folder / "per-primitive" / "balancer")
    assert steps.primitives_in_source(str(folder / "per-primitive")) == ["balancer"]
    with pytest.raises(SnapshotError, match="a balancer snapshot, not one of query"):
        steps.snapshot("query", config.load(), source=str(folder / "per-primitive" / "balancer"))
    assert not (project / "data" / "snapshots" / "query").exists(), "nothing imported"


def test_evaluate_refuses_a_table_changed_since_its_manifest(tmp_path_factory, balancer_tables, project, capsys):
    folder = write_balancer_snapshot(tmp_path_factory.mktemp("edited"), balancer_tables)
    requests = pd.read_parquet(folder / "requests.parquet")
    requests.loc[5, "cost_io"] = -1.0  # a value validation would refuse, in a file the manifest no longer describes
    requests.to_parquet(folder / "requests.parquet")
    assert main(["evaluate", "balancer", "--snapshot", str(folder), "--model", "none", "--part", "all"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"aiprim: error: snapshot {folder}: requests.parquet changed since "
                                               "manifest.json was written (sha256 differs)"), err


def test_evaluate_refuses_a_snapshot_that_fails_validation_and_logs_nothing(tmp_path_factory, balancer_tables, project, capsys):
    """A folder validation never saw is validated before it is scored: negative costs are one line naming the
    column and the rows, exit 1, no evaluation run in MLflow, and the folder stays where it is, not accepted."""
    from aiprim.flows import config, experience
    from aiprim.registry._store import configure

    tables = {**balancer_tables, "requests": balancer_tables["requests"].copy()}
    tables["requests"].loc[tables["requests"].index[:5], "cost_cpu"] = -1.0  # hashed into a fresh manifest: only validation sees it
    folder = write_balancer_snapshot(tmp_path_factory.mktemp("negative"), tables)
    assert main(["evaluate", "balancer", "--snapshot", str(folder), "--model", "none", "--part", "all"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rejected: table requests, column cost_cpu: 5 rows out of range (must be >= 0)" in err[0], err
    assert (folder / "requests.parquet").exists() and not experience.history("balancer", config.load())
    assert not configure().search_runs([e.experiment_id for e in configure().search_experiments()]), "an evaluation was logged"

    good = write_balancer_snapshot(tmp_path_factory.mktemp("good"), balancer_tables)
    assert main(["evaluate", "balancer", "--snapshot", str(good), "--model", "none", "--part", "all"]) == 0


def test_a_snapshot_of_the_store_given_as_a_source_is_not_stored_again(project, balancer_snapshot):
    from aiprim.flows import config, steps

    assert steps.snapshot("balancer", config.load(), source=str(balancer_snapshot) + "/") == balancer_snapshot
    assert [p.name for p in balancer_snapshot.parent.iterdir()] == [balancer_snapshot.name]


def test_what_aiprim_snapshot_out_wrote_is_a_source(tmp_path_factory, project, balancer_tables, capsys):
    """``aiprim snapshot --out DIR`` writes ``DIR/balancer/<id>/``; ``run --source DIR`` (or ``DIR/balancer``) reads
    that snapshot, several of them are one line naming them, and validating ``DIR`` itself names what lies inside
    instead of quarantining a folder that holds no snapshot."""
    from aiprim.flows import config, steps
    from aiprim.primitives._snapshot import SnapshotError

    out = tmp_path_factory.mktemp("out")
    one = write_balancer_snapshot(out, balancer_tables)  # out/balancer/<id>
    assert steps.primitives_in_source(str(out)) == ["balancer"]
    assert steps.primitives_in_source(str(out / "balancer")) == ["balancer"]
    cfg = config.load()
    for source in (out, out / "balancer"):
        imported = steps.snapshot("balancer", cfg, source=str(source))
        assert imported.parent == project / "data" / "snapshots" / "balancer"
        assert (imported / "manifest.json").read_bytes() == (one / "manifest.json").read_bytes()

    assert main(["validate", "balancer", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"aiprim: error: snapshot {out}: not a snapshot (no manifest.json, no Parquet tables); the snapshots in it: balancer/{one.name}", err
    assert not (project / "data" / "quarantine").exists(), "a folder that holds no snapshot is not quarantined"

    tables = {**balancer_tables, "requests": balancer_tables["requests"].iloc[:-5]}
    other = write_balancer_snapshot(out, tables)
    with pytest.raises(SnapshotError, match=rf"2 snapshots of balancer \(.*{other.name}.*\); give one of them as --source"):
        steps.snapshot("balancer", cfg, source=str(out))


def test_a_folder_of_tables_without_a_manifest_imports_with_one_written(tmp_path_factory, project, balancer_tables, capsys,
                                                                        monkeypatch):
    """A user's export need not hash its tables: the import writes the manifest into the copy, and validation
    then checks the tables as for any snapshot."""
    import shutil

    from aiprim.flows import config, steps
    from aiprim.primitives._snapshot import SnapshotError

    from tests.conftest import THIRD_PARTY

    # Beside a primitive of another distribution whose one table (requests) the balancer's folder also holds.
    monkeypatch.syspath_prepend(str(THIRD_PARTY))
    from aiprim import primitives

    assert primitives.get("admission").name == "admission"  # found on the path (get rescans entry points)
    assert "admission" in primitives.names()
    written = write_balancer_snapshot(tmp_path_factory.mktemp("written"), balancer_tables)
    folder = tmp_path_factory.mktemp("export")
    for table in ("servers", "requests"):
        shutil.copy(written / f"{table}.parquet", folder)
    assert steps.primitives_in_source(str(folder)) == ["balancer"]
    assert main(["snapshot", "balancer", "--source", str(folder)]) == 0
    imported = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(p.name for p in folder.iterdir()) == ["requests.parquet", "servers.parquet"], "the user's folder as it was"
    manifest = json.loads((imported / "manifest.json").read_text())
    assert manifest["primitive"] == "balancer" and "aiprim wrote this one" in manifest["source"]
    assert manifest["tables"]["requests"]["rows"] == len(balancer_tables["requests"])
    code, err = _validate(imported, capsys)
    assert code == 0, err

    with pytest.raises(SnapshotError, match=r"not the sharder's tables \(shards.parquet, items.parquet"):
        steps.snapshot("sharder", config.load(), source=str(folder))
