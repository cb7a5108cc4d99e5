"""The embedded source: compiles and times real kernels on this machine.

Tasks are drawn shapes of each CPU family (or exactly the tasks of a
``tasks.parquet`` a user hands in); each task gets ``schedules_per_task``
distinct schedules drawn uniformly from its family's space. All libraries are
compiled first (in parallel: nothing is timed meanwhile), then every schedule
is checked and timed one at a time (see ``_measure``). Where a CUDA GPU is
present, Triton matmul configurations are measured too (``_triton``).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aiprim._console import log, progress_bar

from ._space import CPU_FAMILIES, FAMILIES, TaskError, extent_of, parse_shape, sample_schedules, schedule_json

# Shape draws are kept to <= 2^28 flops (config ``max_flops``) so a good schedule runs in milliseconds on one core.
MAX_FLOPS = 2 ** 28
TRITON_SIZES = (16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096)


def progress(message: str) -> None:
    """One line of the compiler's, through aiprim's console (stderr: stdout stays clean for --json)."""
    log(message, "compiler")


def draw_shape(kernel: str, rng: np.random.Generator, max_flops: float = MAX_FLOPS) -> dict:
    while True:
        if kernel == "matmul":
            shape = {d: int(rng.choice([32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512])) for d in ("M", "N", "K")}
        elif kernel == "conv2d":
            hw = int(rng.choice([14, 20, 28, 40, 56]))
            r = int(rng.choice([1, 3, 5]))
            shape = {"N": int(rng.choice([1, 2])), "C": int(rng.choice([3, 8, 16, 32, 64])), "H": hw, "W": hw,
                     "K": int(rng.choice([8, 16, 32, 64])), "R": r, "S": r}
        elif kernel == "stencil2d":
            shape = {"H": int(rng.integers(4, 65)) * 32 + int(rng.integers(0, 3)), "W": int(rng.integers(4, 65)) * 32 + int(rng.integers(0, 3))}
        elif kernel == "triton_matmul":
            # Multiples of 16 (Triton compiles a configuration once for all of them), from sizes where a launch
            # costs more than the work (placement's crossover with the CPU lies near 1e5 flops) to 4096.
            shape = {d: int(rng.choice(TRITON_SIZES)) for d in ("M", "N", "K")}
        else:
            raise TaskError(f"no shape generator for {kernel}")
        if kernel == "triton_matmul" or extent_of(FAMILIES[kernel].flops, FAMILIES[kernel].env(shape)) <= max_flops:
            return shape


def task_id_of(kernel: str, shape: dict) -> str:
    return f"{kernel}-" + "x".join(str(shape[d]) for d in FAMILIES[kernel].dims)


def generated_tasks(config: dict, rng: np.random.Generator, families) -> pd.DataFrame:
    rows, seen = [], set()
    for kernel in families:
        count = int(config.get("tasks_per_family", 10))
        attempts = 0
        while sum(r["kernel"] == kernel for r in rows) < count and attempts < count * 50:
            attempts += 1
            shape = draw_shape(kernel, rng, float(config.get("max_flops") or MAX_FLOPS))
            task_id = task_id_of(kernel, shape)
            if task_id not in seen:
                seen.add(task_id)
                rows.append({"task_id": task_id, "kernel": kernel, "shape": json.dumps(shape)})
    return pd.DataFrame(rows, columns=["task_id", "kernel", "shape"])


def read_tasks(path) -> pd.DataFrame:
    """A user's tasks.parquet, checked task by task (the error names the first bad task)."""
    path = Path(path)
    if not path.exists():
        raise TaskError(f"tasks file {path}: not found")
    try:
        tasks = pd.read_parquet(path)
    except Exception as exc:
        raise TaskError(f"tasks file {path}: not a Parquet file ({exc})") from None
    missing = [c for c in ("task_id", "kernel", "shape") if c not in tasks.columns]
    if missing:
        raise TaskError(f"tasks file {path}: missing column {', '.join(missing)}")
    if tasks.empty:
        raise TaskError(f"tasks file {path}: no tasks")
    duplicated = tasks["task_id"][tasks["task_id"].duplicated()]
    if len(duplicated):
        raise TaskError(f"tasks file {path}: task_id {duplicated.iloc[0]!r} appears twice")
    for row in tasks.itertuples():
        parse_shape(row.kernel, row.shape, row.task_id)
    return tasks[["task_id", "kernel", "shape"]].astype(str).reset_index(drop=True)


def _row(task_id: str, schedule: dict, started: float, **values) -> dict:
    row = {"task_id": task_id, "schedule": schedule_json(schedule), "runtime_s": None, "runtime_std_s": None, "repeats": 1,
           "error": None, "time_limit_s": None}
    row.update(values)
    row["ts"] = time.time() - started
    return row


def generate(config: dict, seed: int) -> tuple[dict, dict]:
    from ._machine import cpu_caches
    from ._measure import Worker, build_all, cpu_target, measure_task
    from ._triton import gpu_available, measure_triton

    rng = np.random.default_rng(seed)
    given = bool(config.get("tasks"))
    if given:
        tasks = read_tasks(config["tasks"])
    else:
        families = list(CPU_FAMILIES if config.get("families") is None else config["families"])
        for kernel in families:
            if kernel not in CPU_FAMILIES:
                raise TaskError(f"source families: {kernel!r} is not a CPU kernel family (known: {', '.join(CPU_FAMILIES)})")
        tasks = generated_tasks(config, rng, families)
    why_no_gpu = gpu_available() if config.get("gpu", "auto") or given else "not asked for (gpu: false)"
    if not given and config.get("gpu", "auto"):
        if why_no_gpu is None:
            gpu_tasks = generated_tasks({"tasks_per_family": config.get("gpu_tasks", 8)}, rng, ["triton_matmul"])
            tasks = pd.concat([tasks, gpu_tasks], ignore_index=True)
        else:
            progress(f"Triton matmul skipped: {why_no_gpu}")
    per_task = int(config.get("schedules_per_task", 32))
    schedules = {row.task_id: sample_schedules(row.kernel, per_task, rng) for row in tasks.itertuples()
                 if FAMILIES[row.kernel].target == "cpu"}
    # GPU tasks draw from one shared pool of configurations, as Triton's autotuner does: Triton compiles
    # a configuration once for every shape, where each CPU schedule is a new compilation anyway.
    gpu_pool = {k: sample_schedules(k, int(config.get("gpu_configs", 64)), rng) for k in set(tasks["kernel"]) if FAMILIES[k].target == "cuda"}
    for row in tasks.itertuples():
        if row.kernel in gpu_pool:
            pool = gpu_pool[row.kernel]
            schedules[row.task_id] = [pool[i] for i in sorted(rng.permutation(len(pool))[:per_task])]
    on_gpu = tasks["kernel"].map(lambda k: FAMILIES[k].target == "cuda").to_numpy()
    cpu, gpu = tasks[~on_gpu], tasks[on_gpu]
    cache_dir = Path(config.get("cache_dir") or Path(tempfile.gettempdir()) / "aiprim-kernels")
    limit = float(config.get("time_limit_s", 0.5))
    target = cpu_target()
    targets = dict.fromkeys(cpu["task_id"], target)
    started = time.time()
    rows = []
    if len(cpu):
        progress(f"compiling {sum(len(schedules[t]) for t in cpu['task_id'])} schedules of {len(cpu)} tasks ({target})")
        with progress_bar("compiler", "compiling", len(cpu), unit="task", lines_every=10) as compiling:
            built = build_all([(row.kernel, json.loads(row.shape), schedules[row.task_id]) for row in cpu.itertuples()], cache_dir,
                              progress=compiling.advance)
        with Worker() as worker, progress_bar("compiler", "measuring", len(cpu), unit="task") as measuring:
            for row, (libraries, errors) in zip(cpu.itertuples(), built):
                results = measure_task(worker, row.kernel, json.loads(row.shape), libraries, errors, seed, config)
                rows.extend(_row(row.task_id, schedule, started, runtime_s=r.runtime_s, runtime_std_s=r.runtime_std_s,
                                 repeats=r.repeats, error=r.error, time_limit_s=limit)
                            for schedule, r in zip(schedules[row.task_id], results))
                ok = [r.runtime_s for r in results if r.runtime_s]
                best = f"best {min(ok) * 1e3:.3g} ms" if ok else "no schedule ran"
                measuring.advance(f"{row.task_id}: {best}, {len(results) - len(ok)} failed")
    gpu_target = None
    if len(gpu) and why_no_gpu is None:
        gpu_target, gpu_rows = measure_triton(gpu, schedules, config, started, progress)
        rows.extend(gpu_rows)
        targets.update(dict.fromkeys(gpu["task_id"], gpu_target))
    elif len(gpu):  # a user's GPU tasks on a machine that cannot run them: recorded, never silently dropped
        progress(f"{len(gpu)} Triton tasks not measured: {why_no_gpu}")
        rows.extend(_row(row.task_id, schedule, started, error=f"not measured: {why_no_gpu}")
                    for row in gpu.itertuples() for schedule in schedules[row.task_id])
        targets.update(dict.fromkeys(gpu["task_id"], "cuda"))
    measurements = pd.DataFrame(rows, columns=["task_id", "schedule", "runtime_s", "runtime_std_s", "repeats", "error", "ts", "time_limit_s"])
    measurements = measurements.astype({"runtime_s": "float64", "runtime_std_s": "float64", "repeats": "int32", "ts": "float64",
                                        "time_limit_s": "float64"})
    tasks = tasks.assign(target=tasks["task_id"].map(targets))
    # The caches the CPU tasks ran against, so features of this snapshot compare tiles with them wherever it is
    # trained; null for GPU tasks, which have no such CPU cache.
    caches = cpu_caches()
    for column in ("l1_bytes", "l2_bytes"):
        tasks[column] = pd.array(np.where(on_gpu, None, caches[column]), dtype="Int64")
    ok = int(measurements["runtime_s"].notna().sum())
    progress(f"{ok}/{len(measurements)} schedules of {len(tasks)} tasks measured in {time.time() - started:.1f}s")
    manifest_target = "+".join(t for t in (target if len(cpu) else None, gpu_target) if t) or target
    return {"tasks": tasks, "measurements": measurements}, {"target": manifest_target}
