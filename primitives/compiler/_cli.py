"""The compiler's own ``aiprim`` verbs: ``autotune``, and ``snapshot compiler --tasks``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ...settings import resolve_path

log = logging.getLogger("aiprim.compiler")


def add_snapshot_arguments(parser) -> None:
    parser.add_argument("--tasks", help="compiler: measure exactly the tasks of this tasks.parquet (task_id, kernel, shape)")


def source_overrides(args) -> dict:
    return {"tasks": str(Path(args.tasks).resolve())} if getattr(args, "tasks", None) else {}


def add_commands(subparsers) -> dict:
    at = subparsers.add_parser("autotune", help="compiler: rank candidate schedules with the cost model, measure only the best few")
    at.add_argument("--task", required=True, help='KERNEL:DIM=N,... (e.g. matmul:M=512,N=512,K=512) or a JSON {"kernel", "shape"}')
    at.add_argument("--model", default="champion", help="champion | challenger | VERSION | RUN_ID")
    at.add_argument("--candidates", type=int, default=2000, help="schedules drawn from the space and scored by the model")
    at.add_argument("--trials", type=int, default=10, help="schedules measured for real (the model's top ones); "
                    "with --targets, per target, and 0 decides from predictions alone")
    at.add_argument("--targets", help="cpu,cuda: predict the best schedule's time on each target and choose where the "
                                      "task runs (the task's computation on each target's kernel family)")
    at.add_argument("--seed", type=int, default=0)
    at.add_argument("--json", action="store_true", help="print the result as one JSON object")
    at.add_argument("--profile")
    return {"autotune": autotune_command}


def autotune_command(args, cfg: dict) -> int:
    if args.targets:
        return placement_command(args, cfg)
    result = autotune_with_model(args.task, cfg, model=args.model, candidates=args.candidates, trials=args.trials, seed=args.seed)
    if args.json:
        print(json.dumps(result))
        return 0
    best = result["best"]
    print(f"{result['task']['kernel']} {result['task']['shape']} on {result['target']}: scored {result['candidates_scored']} "
          f"of {result['space_size']} schedules, measured {result['measured']} ({result['failed']} failed)")
    for t in result["trials"]:
        measured = f"{t['measured_s'] * 1e3:9.3f} ms" if t["measured_s"] is not None else f"  failed: {t['error']}"
        print(f"  #{t['rank']:<3} predicted {t['predicted_s'] * 1e3:9.3f} ms  measured {measured}  {json.dumps(t['schedule'])}")
    if best is None:
        raise ValueError("none of the measured schedules ran")
    print(f"best: {best['runtime_s'] * 1e3:.3f} ms (model rank {best['rank']}) {best['schedule_json']}")
    return 0


def placement_command(args, cfg: dict) -> int:
    result = place_with_model(args.task, cfg, args.targets, model=args.model, candidates=args.candidates,
                              trials=args.trials, seed=args.seed)
    if args.json:
        print(json.dumps(result))
        return 0
    task = result["task"]
    print(f"{task['kernel']} {task['shape']}: " + ", ".join(
        f"{t} predicted {r['predicted_s'] * 1e3:.4g} ms ({r['kernel']})" for t, r in result["targets"].items())
        + f" -> {result['choice']}")
    if "measured_choice" in result:
        measured = ", ".join(f"{t} {r['measured_s'] * 1e3:.4g} ms" if r["measured_s"] is not None else f"{t} failed"
                             for t, r in result["targets"].items())
        verdict = "right" if result["choice"] == result["measured_choice"] else f"wrong: {result['measured_choice']} is faster"
        print(f"measured (best of the model's top {args.trials} on each): {measured}; the choice was {verdict}")
    return 0


def place_with_model(task_spec: str, cfg: dict, targets_spec: str, model: str = "champion", candidates: int = 2000,
                     trials: int = 10, seed: int = 0) -> dict:
    """Where a task runs fastest, by a registered cost model's predictions; with ``trials`` > 0 the model's top
    schedules on every target are measured too, so the choice is checked."""
    from ... import registry
    from ._autotune import measure_schedules, parse_task_spec
    from ._placement import counterpart, parse_targets, place
    from ._space import TaskError
    from ._triton import gpu_available

    task = parse_task_spec(task_spec)
    targets = parse_targets(targets_spec)
    for target in targets:  # before the registry is read: a task no target can run is the user's first error
        counterpart(task["kernel"], target)
    if trials < 0:
        raise TaskError("--trials must be 0 or more")
    why_not = gpu_available() if trials and "cuda" in targets else None
    if why_not:
        raise TaskError(f"cuda: {why_not}; --trials 0 decides from the model's predictions alone")
    runtime = registry.load_runtime("compiler", model)
    decision = place(task, runtime, targets, candidates=candidates, seed=seed)
    result = {"task": {"kernel": task["kernel"], "shape": task["shape"]}, "model": model, "choice": decision["choice"],
              "targets": {t: {"kernel": d["kernel"], "predicted_s": d["predicted_s"], "schedule": d["schedule"]}
                          for t, d in decision["targets"].items()}}
    log.info("placed %s %s on %s from predictions", task["kernel"], task["shape"], decision["choice"])
    if trials:
        source_cfg = _source_config(cfg)
        for target, d in decision["targets"].items():
            chosen = [d["pool"][i] for i in d["order"][:trials]]
            measured_on, measured = measure_schedules(d["kernel"], task["shape"], chosen, seed, source_cfg,
                                                      progress=lambda m: log.info("%s", m))
            ok = [seconds for seconds, _ in measured if seconds is not None]
            result["targets"][target].update(measured_s=min(ok) if ok else None, measured_on=measured_on,
                                             failed=len(measured) - len(ok))
        timed = {t: r["measured_s"] for t, r in result["targets"].items() if r["measured_s"] is not None}
        if not timed:
            raise ValueError("none of the measured schedules ran on any target")
        result["measured_choice"] = min(timed, key=timed.get)
    return result


def _source_config(cfg: dict) -> dict:
    source_cfg = dict(cfg["primitive_configs"].get("compiler", {}).get("source", {}))
    if source_cfg.get("cache_dir"):
        source_cfg["cache_dir"] = str(resolve_path(source_cfg["cache_dir"]))
    return source_cfg


def autotune_with_model(task_spec: str, cfg: dict, model: str = "champion", candidates: int = 2000, trials: int = 10,
                        seed: int = 0) -> dict:
    """Rank candidate schedules of one task with a registered cost model and measure only the best ``trials``."""
    from ... import registry
    from ._autotune import autotune, check_counts, parse_task_spec

    task = parse_task_spec(task_spec)
    check_counts(candidates, trials)
    runtime = registry.load_runtime("compiler", model)
    source_cfg = _source_config(cfg)
    started = time.perf_counter()
    result = autotune(task, runtime, candidates=candidates, trials=trials, seed=seed, config=source_cfg,
                      progress=lambda m: log.info("%s", m))
    result["model"] = model
    log.info("autotuned %s %s in %.1fs", task["kernel"], task["shape"], time.perf_counter() - started)
    return result
