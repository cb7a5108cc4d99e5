"""The compiler cost model's tables, as TELEMETRY.md (schema_version 1) defines them.

Optional columns this project adds (``required=False``): ``tasks.target`` (the
device a task was measured on, when a snapshot mixes CPU and GPU tasks),
``tasks.l1_bytes`` and ``tasks.l2_bytes`` (the L1 data and L2 cache sizes of the
CPU that measured a task, null for GPU tasks: the features compare a tile's
working set with them, and with fixed fallback sizes where a snapshot written
before them has none) and ``measurements.time_limit_s`` (the limit a timed-out
schedule ran into: its runtime is known to be at least that).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._schema import Column, Rule, Schema, Table, references, set_unless
from ._space import TaskError, parse_schedule, parse_shape


def _task_problem(row) -> str | None:
    try:
        parse_shape(row.kernel, row.shape, row.task_id)
    except TaskError as exc:
        return str(exc)
    return None


def _tasks_ok(frames) -> pd.Series:
    tasks = frames["tasks"]
    return pd.Series([_task_problem(row) is None for row in tasks.itertuples()], index=tasks.index, dtype=bool)


def _explain_task(frames, i: int) -> str:
    return _task_problem(next(frames["tasks"].iloc[[i]].itertuples()))


def _kernels(frames) -> dict:
    tasks = frames.get("tasks")
    return dict(zip(tasks["task_id"], tasks["kernel"])) if tasks is not None else {}


def _schedule_problem(kernels: dict, task_id: str, schedule: str) -> str | None:
    if task_id not in kernels:
        return None  # reported by task_id_in_tasks
    try:
        parse_schedule(kernels[task_id], schedule, task_id)
    except TaskError as exc:
        return str(exc)
    return None


def _schedules_ok(frames) -> pd.Series:
    kernels = _kernels(frames)
    m = frames["measurements"]
    # Schedules repeat across tasks: check each distinct (kernel, schedule) once.
    pairs = pd.DataFrame({"kernel": m["task_id"].map(kernels), "schedule": m["schedule"], "task_id": m["task_id"]})
    verdict = {}
    for row in pairs.drop_duplicates(["kernel", "schedule"]).itertuples():
        verdict[(row.kernel, row.schedule)] = _schedule_problem(kernels, row.task_id, row.schedule) is None
    return pd.Series([verdict[k] for k in zip(pairs["kernel"], pairs["schedule"])], index=m.index, dtype=bool)


def _explain_schedule(frames, i: int) -> str:
    row = frames["measurements"].iloc[i]
    return _schedule_problem(_kernels(frames), row["task_id"], row["schedule"])


def _explain_runtime(frames, i: int) -> str:
    row = frames["measurements"].iloc[i]
    return f"task {row['task_id']}: schedule {row['schedule']} has neither a runtime nor an error"


def _positive_finite_runtime(frames) -> pd.Series:
    runtime = frames["measurements"]["runtime_s"].to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        ok = np.isnan(runtime) | (np.isfinite(runtime) & (runtime > 0))
    return pd.Series(ok, index=frames["measurements"].index)


def _explain_runtime_value(frames, i: int) -> str:
    row = frames["measurements"].iloc[i]
    return f"task {row['task_id']}: runtime_s={float(row['runtime_s'])!r} for schedule {row['schedule']}"


TASKS = Table(
    "tasks",
    (
        Column("task_id", "string", unique=True, non_empty=True),
        Column("kernel", "string", non_empty=True, drift="distribution"),
        Column("shape", "string", non_empty=True),
        Column("target", "string", nullable=True, non_empty=True, required=False),
        Column("l1_bytes", "int64", nullable=True, min=0, strict_min=True, required=False),
        Column("l2_bytes", "int64", nullable=True, min=0, strict_min=True, required=False),
    ),
    rules=(Rule("known_kernel_and_shape", "kernel is a known family and shape a JSON object of its dimensions, "
                "each a positive integer", _tasks_ok, _explain_task),),
)

MEASUREMENTS = Table(
    "measurements",
    (
        Column("task_id", "string", non_empty=True),
        Column("schedule", "string", non_empty=True),
        # "> 0" is the rule runtime_is_positive below, which names the task in its error.
        # Measured on this machine, so it moves with its load: sanity rules only, no drift watch.
        Column("runtime_s", "float64", nullable=True),
        Column("runtime_std_s", "float64", nullable=True, min=0.0),
        Column("repeats", "int32", min=1),
        Column("error", "string", nullable=True),
        Column("ts", "float64", min=0.0),
        Column("time_limit_s", "float64", nullable=True, min=0.0, strict_min=True, required=False),
    ),
    rules=(
        references("measurements", "task_id", "tasks", noun="task"),
        Rule("schedule_has_known_knobs", "schedule is a JSON object setting every knob of the task's family "
             "to an allowed value", _schedules_ok, _explain_schedule),
        Rule("runtime_is_positive", "runtime_s is a positive, finite number of seconds", _positive_finite_runtime,
             _explain_runtime_value),
        set_unless("measurements", "runtime_s", "error", name="runtime_unless_error", explain=_explain_runtime),
    ),
)

SCHEMA = Schema(version=1, tables=(TASKS, MEASUREMENTS))
