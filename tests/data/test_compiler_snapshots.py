"""Data tests of the compiler cost model's telemetry: every bad input of the issue gets one readable
line naming the task, the snapshot is quarantined, and nothing is trained or promoted from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aiprim.flows.cli import main
from tests.data.edits import accept_reference, edit as _edit, set_cell as _set


def _write(root: Path, tables: dict, extra: dict) -> Path:
    from aiprim import primitives
    from aiprim.primitives._snapshot import write_snapshot

    prim = primitives.get("compiler")
    return write_snapshot("compiler", prim.schema, tables, root, source="tests", extra=extra)


def _first(tables, kernel: str) -> int:
    return int(np.flatnonzero(tables["tasks"]["kernel"] == kernel)[0])


def _shape_edit(kernel: str, change):
    def make(tables):
        row = _first(tables, kernel)
        shape = change(json.loads(tables["tasks"]["shape"][row]))
        return _edit(tables, "tasks", _set("shape", row, json.dumps(shape)))
    return make


def _task_of_measurement(tables, row: int) -> str:
    return tables["measurements"]["task_id"][row]


def _schedule_edit(change):
    def make(tables):
        schedule = change(json.loads(tables["measurements"]["schedule"][0]))
        return _edit(tables, "measurements", _set("schedule", 0, json.dumps(schedule)))
    return make


CASES = {
    "unknown kernel family": (lambda t: _edit(t, "tasks", _set("kernel", 0, "fft3d")),
                              lambda t: f"(first: task {t['tasks']['task_id'][0]}: unknown kernel family 'fft3d'"),
    "shape missing a dimension": (_shape_edit("matmul", lambda s: {k: v for k, v in s.items() if k != "K"}),
                                  lambda t: f"task {t['tasks']['task_id'][_first(t, 'matmul')]}: matmul shape misses dimension K"),
    "non-positive dimension": (_shape_edit("conv2d", lambda s: {**s, "C": 0}),
                               lambda t: f"task {t['tasks']['task_id'][_first(t, 'conv2d')]}: dimension C=0 must be a positive integer"),
    "unknown knob": (_schedule_edit(lambda s: {**s, "prefetch": 2}),
                     lambda t: f"task {_task_of_measurement(t, 0)}: unknown knob prefetch"),
    "knob value outside the space": (_schedule_edit(lambda s: {**s, "unroll": 3}),
                                     lambda t: f"task {_task_of_measurement(t, 0)}: knob unroll=3 is not one of"),
    "non-positive runtime": (lambda t: _edit(t, "measurements", _set("runtime_s", _measured_row(t), 0.0)),
                             lambda t: f"task {_task_of_measurement(t, _measured_row(t))}: runtime_s=0.0"),
    "NaN runtime without an error": (lambda t: _edit(t, "measurements", _set("runtime_s", _measured_row(t), float("nan"))),
                                     lambda t: f"task {_task_of_measurement(t, _measured_row(t))}: schedule"),
    "non-positive cache size": (lambda t: _edit(t, "tasks", _set("l1_bytes", 0, 0)),
                                lambda t: "column l1_bytes: 1 rows out of range (must be > 0)"),
    "measurement of an unknown task": (lambda t: _edit(t, "measurements", _set("task_id", 0, "ghost")),
                                       lambda t: "task_id names a task of tasks.parquet"),
}


def _measured_row(tables) -> int:
    m = tables["measurements"]
    return int(np.flatnonzero(m["runtime_s"].notna().to_numpy() & m["error"].isna().to_numpy())[0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_compiler_telemetry_is_rejected(case, project, compiler_tables, capsys):
    tables, extra = compiler_tables
    make, expected = CASES[case]
    directory = _write(project / "data" / "snapshots", make(tables), extra)
    code = main(["validate", "compiler", str(directory)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err
    assert err.startswith("aiprim: error: compiler snapshot") and expected(tables) in err, err
    assert not directory.exists() and list((project / "data" / "quarantine" / "compiler").iterdir())


def test_a_failed_snapshot_never_reaches_training(project, compiler_tables, capsys):
    tables, extra = compiler_tables
    bad = _edit(tables, "tasks", _set("kernel", 0, "fft3d"))
    directory = _write(project / "data" / "snapshots", bad, extra)
    assert main(["train", "compiler", str(directory)]) != 0
    assert "unknown kernel family 'fft3d'" in capsys.readouterr().err
    assert not _versions()


def _versions():
    from aiprim.registry import configure

    return configure().search_model_versions("name='aiprim-compiler'")


def test_valid_snapshot_is_accepted_and_records_failures(project, compiler_tables, capsys):
    tables, extra = compiler_tables
    assert extra["target"].startswith(("x86_64", "aarch64"))
    m = tables["measurements"]
    assert (m.groupby("task_id").size() == 8).all()  # every drawn schedule is recorded, failed or not
    assert ((m["runtime_s"] > 0) | m["error"].notna()).all()
    directory = _write(project / "data" / "snapshots", tables, extra)
    assert main(["validate", "compiler", str(directory), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"]


def test_tasks_record_the_caches_they_ran_against_and_older_snapshots_stay_valid(project, compiler_tables, capsys):
    from aiprim.primitives.compiler._machine import cpu_caches

    tables, extra = compiler_tables
    caches = cpu_caches()
    assert (tables["tasks"]["l1_bytes"] == caches["l1_bytes"]).all() and (tables["tasks"]["l2_bytes"] == caches["l2_bytes"]).all()
    # Written before tasks recorded caches: no such columns, still a valid snapshot.
    before = {**tables, "tasks": tables["tasks"].drop(columns=["l1_bytes", "l2_bytes"])}
    directory = _write(project / "data" / "snapshots", before, extra)
    assert main(["validate", "compiler", str(directory), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"]


def test_manifest_must_name_the_target(project, compiler_tables, capsys):
    tables, _ = compiler_tables
    directory = _write(project / "data" / "snapshots", tables, {})
    assert main(["validate", "compiler", str(directory)]) != 0
    assert "manifest.json: missing key 'target'" in capsys.readouterr().err


@pytest.mark.parametrize("rows, expected", [
    ([{"task_id": "a", "kernel": "matmul", "shape": '{"M": 8, "N": 8}'}], "task a: matmul shape misses dimension K"),
    ([{"task_id": "b", "kernel": "gemv", "shape": '{"M": 8}'}], "task b: unknown kernel family 'gemv'"),
    ([{"task_id": "c", "kernel": "stencil2d", "shape": '{"H": -4, "W": 8}'}], "task c: dimension H=-4 must be a positive integer"),
    ([{"task_id": "d", "kernel": "stencil2d", "shape": '{"H": 2, "W": 8}'}], "task d: stencil2d shape"),
])
def test_bad_tasks_file_names_the_task(rows, expected, project, tmp_path, capsys):
    path = tmp_path / "tasks.parquet"
    pd.DataFrame(rows).to_parquet(path)
    assert main(["snapshot", "compiler", "--tasks", str(path), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


def test_same_kernels_on_a_busier_machine_are_accepted(project, compiler_tables, capsys):
    tables, extra = compiler_tables
    accept_reference("compiler", _write(project / "data" / "snapshots", tables, extra), capsys)
    busier = _edit(tables, "measurements", lambda f: f.assign(runtime_s=f["runtime_s"] * 3.0, runtime_std_s=f["runtime_std_s"] * 3.0))
    assert main(["validate", "compiler", str(_write(project / "data" / "snapshots", busier, extra))]) == 0, capsys.readouterr().err


def test_changed_kernel_mix_is_rejected(project, compiler_tables, capsys):
    tables, extra = compiler_tables
    accept_reference("compiler", _write(project / "data" / "snapshots", tables, extra), capsys)
    tasks = tables["tasks"][tables["tasks"]["kernel"] == "matmul"].reset_index(drop=True)
    measurements = tables["measurements"][tables["measurements"]["task_id"].isin(tasks["task_id"])].reset_index(drop=True)
    directory = _write(project / "data" / "snapshots", {"tasks": tasks, "measurements": measurements}, extra)
    assert main(["validate", "compiler", str(directory)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "table tasks, column kernel: drift: category shares moved by" in err, err
