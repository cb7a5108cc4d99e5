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
    at.add_argument("--trials", type=int, default=10, help="schedules measured for real (the model's top ones)")
    at.add_argument("--seed", type=int, default=0)
    at.add_argument("--json", action="store_true", help="print the result as one JSON object")
    at.add_argument("--profile")
    return {"autotune": autotune_command}


def autotune_command(args, cfg: dict) -> int:
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


def autotune_with_model(task_spec: str, cfg: dict, model: str = "champion", candidates: int = 2000, trials: int = 10,
                        seed: int = 0) -> dict:
    """Rank candidate schedules of one task with a registered cost model and measure only the best ``trials``."""
    from ... import registry
    from ._autotune import autotune, parse_task_spec

    task = parse_task_spec(task_spec)
    runtime = registry.load_runtime("compiler", model)
    source_cfg = dict(cfg["primitive_configs"].get("compiler", {}).get("source", {}))
    if source_cfg.get("cache_dir"):
        source_cfg["cache_dir"] = str(resolve_path(source_cfg["cache_dir"]))
    started = time.perf_counter()
    result = autotune(task, runtime, candidates=candidates, trials=trials, seed=seed, config=source_cfg,
                      progress=lambda m: log.info("%s", m))
    result["model"] = model
    log.info("autotuned %s %s in %.1fs", task["kernel"], task["shape"], time.perf_counter() - started)
    return result
