"""Model-guided autotuning: score many candidate schedules, measure only the model's best few.

``autotune(task, runtime)`` draws ``candidates`` distinct schedules from the
family's space (all of them when the space is smaller), ranks them with the
cost model, compiles and times the top ``trials`` for real (the measuring
protocol of the source), and reports the fastest measured one.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ._runtime import task_parts
from ._space import FAMILIES, TaskError, parse_shape, sample_schedules, schedule_json, space_size


def parse_task_spec(spec: str) -> dict:
    """``matmul:M=512,N=512,K=512`` or a JSON object ``{"kernel": ..., "shape": {...}}``."""
    spec = spec.strip()
    if spec.startswith("{"):
        try:
            task = json.loads(spec)
        except ValueError:
            raise TaskError(f"--task {spec[:60]!r}: not JSON") from None
        if not isinstance(task, dict) or "kernel" not in task or "shape" not in task:
            raise TaskError('--task: a JSON task needs "kernel" and "shape"')
    else:
        kernel, _, dims = spec.partition(":")
        shape = {}
        for part in filter(None, dims.split(",")):
            name, eq, value = part.partition("=")
            try:
                shape[name.strip()] = int(value) if eq else None
            except ValueError:
                raise TaskError(f"--task: dimension {part!r} is not NAME=INTEGER") from None
            if not eq:
                raise TaskError(f"--task: dimension {part!r} is not NAME=INTEGER")
        task = {"kernel": kernel.strip(), "shape": shape}
    parse_shape(task["kernel"], task["shape"], "--task")
    return {"task_id": task.get("task_id", "--task"), "kernel": task["kernel"], "shape": task["shape"]}


def rank_candidates(task, runtime, candidates: int = 1000, seed: int = 0,
                    caches: tuple[int, int] | None = None) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """``candidates`` distinct schedules drawn from the task's space, their predicted seconds, and their order
    (predicted fastest first). ``caches``: as ``Runtime.predict``'s, for a machine other than this one."""
    kernel, shape, _ = task_parts(task)
    pool = sample_schedules(kernel, candidates, np.random.default_rng(seed))
    predicted = runtime.predict({"kernel": kernel, "shape": shape}, pool, caches)
    return pool, predicted, np.argsort(predicted, kind="stable")


def measure_schedules(kernel: str, shape: dict, schedules: list[dict], seed: int = 0, config: dict | None = None,
                      progress=None) -> tuple[str, list[tuple[float | None, str | None]]]:
    """(target, [(seconds or None, error or None)]) of each schedule, compiled and timed on this machine."""
    from ._measure import Worker, build, cpu_target, measure_task

    config = dict(config or {})
    if FAMILIES[kernel].target == "cpu":
        cache_dir = Path(config.get("cache_dir") or Path(tempfile.gettempdir()) / "aiprim-kernels")
        libraries, errors = build(kernel, shape, schedules, cache_dir)
        with Worker() as worker:
            results = measure_task(worker, kernel, shape, libraries, errors, seed, config)
        return cpu_target(), [(r.runtime_s, r.error) for r in results]
    import pandas as pd

    from ._triton import gpu_available, measure_triton

    why_not = gpu_available()
    if why_not:
        raise TaskError(f"{kernel} needs a CUDA GPU: {why_not}")
    frame = pd.DataFrame([{"task_id": "autotune", "kernel": kernel, "shape": json.dumps(shape)}])
    target, rows = measure_triton(frame, {"autotune": schedules}, config, time.time(), progress or (lambda m: None))
    return target, [(r["runtime_s"], r["error"]) for r in rows]


def check_counts(candidates: int, trials: int) -> None:
    """The command's counts, checked before anything is loaded or measured."""
    if trials < 1:
        raise TaskError("--trials must be at least 1")
    if candidates < trials:
        raise TaskError(f"--candidates must be at least --trials ({trials}), not {candidates}")


def autotune(task, runtime, candidates: int = 1000, trials: int = 10, seed: int = 0, config: dict | None = None,
             progress=None) -> dict:
    kernel, shape, _ = task_parts(task)
    check_counts(candidates, trials)
    started = time.perf_counter()
    pool, predicted, order = rank_candidates({"kernel": kernel, "shape": shape}, runtime, candidates, seed)
    ranked = order[:trials]
    scoring_s = time.perf_counter() - started
    chosen = [pool[i] for i in ranked]
    if progress:
        progress(f"scored {len(pool)} of {space_size(kernel)} schedules in {scoring_s * 1e3:.1f} ms; measuring the top {len(chosen)}")
    started = time.perf_counter()
    target, measured = measure_schedules(kernel, shape, chosen, seed, config, progress)
    measuring_s = time.perf_counter() - started
    trials_out = [{"rank": n + 1, "schedule": schedule, "predicted_s": float(predicted[i]), "measured_s": runtime_s, "error": error}
                  for n, (i, schedule, (runtime_s, error)) in enumerate(zip(ranked, chosen, measured))]
    ok = [t for t in trials_out if t["measured_s"] is not None]
    best = min(ok, key=lambda t: t["measured_s"]) if ok else None
    return {
        "task": {"kernel": kernel, "shape": shape}, "target": target, "space_size": space_size(kernel),
        "candidates_scored": len(pool), "measured": len(trials_out), "failed": len(trials_out) - len(ok),
        "best": None if best is None else {"schedule": best["schedule"], "schedule_json": schedule_json(best["schedule"]),
                                           "runtime_s": best["measured_s"], "predicted_s": best["predicted_s"], "rank": best["rank"]},
        "scoring_s": scoring_s, "measuring_s": measuring_s, "trials": trials_out,
    }
