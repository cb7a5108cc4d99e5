"""Benchmark: the ceiling that measurement noise sets for any compiler cost model on this machine.

Snapshots of the default source with the same seed hold the same shapes and the same schedules, measured at
different times. Taking the others' median as the "prediction" of each measurement in turn scores, with the
primitive's own metrics (`_metrics`: top-1, top-5, Kendall tau, MAPE, tuning curve), what knowing every
schedule's time as well as these measurements know it is worth against a fresh measurement. A model evaluated
on one measurement of held-out shapes is bounded by that noise too: a goal far above these numbers is out of
reach on this machine whatever the model; one near them is limited by the machine's timing.

    .venv/bin/python benchmarks/compiler_transfer.py --measure-seed 0 --measure-out /tmp/n1   # twice, same seed
    .venv/bin/python benchmarks/compiler_transfer.py --measure-seed 0 --measure-out /tmp/n2
    .venv/bin/python benchmarks/compiler_noise.py /tmp/n1 /tmp/n2 [/tmp/n3 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from compiler_transfer import read_snapshot  # noqa: E402  (one reading of a snapshot folder for both benchmarks)


def noise_ceiling(snapshots: list[dict]) -> dict:
    """The metrics of the other measurements (their median) ranking each one in turn, averaged over the turns,
    per family and over all tasks. With two snapshots: each measurement ranking the other."""
    from aiprim.primitives.compiler._metrics import aggregate, task_metrics

    keys = ["task_id", "schedule"]
    pairs = snapshots[0]["measurements"][keys + ["time_limit_s"]]
    for n, tables in enumerate(snapshots):
        pairs = pairs.merge(tables["measurements"][keys + ["runtime_s"]].rename(columns={"runtime_s": f"t{n}"}), on=keys)
    if pairs.empty:
        raise SystemExit("compiler_noise: the snapshots share no (task, schedule): measure them with the same seed")
    times = pairs[[f"t{n}" for n in range(len(snapshots))]].to_numpy(dtype=float)
    kernel = snapshots[0]["tasks"].set_index("task_id")["kernel"]
    per_family: dict[str, list] = {}
    for task_id, index in pairs.groupby("task_id").indices.items():
        rows = pairs.iloc[index]
        ceiling = float(rows["time_limit_s"].max()) if rows["time_limit_s"].notna().any() else float(np.nanmax(times[index]))
        for n in range(len(snapshots)):
            measured = times[index, n]
            if np.isfinite(measured).sum() < 2:
                continue
            # A schedule that failed every other time is "predicted" at the time limit: ranked last.
            others = np.delete(times[index], n, axis=1)
            with np.errstate(all="ignore"):
                predicted = np.where(np.isfinite(others).any(axis=1), np.nanmedian(others, axis=1), ceiling)
            per_family.setdefault(kernel[task_id], []).append(task_metrics(measured, predicted, ceiling))
    out = {family: aggregate(tasks) | {"tasks": len(tasks) // len(snapshots)} for family, tasks in sorted(per_family.items())}
    everything = [t for tasks in per_family.values() for t in tasks]
    out["all"] = aggregate(everything) | {"tasks": len(everything) // len(snapshots)}
    failed = np.isnan(times)
    out["all"]["schedules"] = len(pairs)
    out["all"]["failed_in_some_not_all"] = int((failed.any(axis=1) & ~failed.all(axis=1)).sum())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("snapshots", nargs="+", help="two or more snapshot folders measured with the same seed")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compiler_noise.json"))
    args = parser.parse_args()
    from aiprim import primitives

    prim = primitives.get("compiler")
    if len(args.snapshots) < 2:
        parser.error("two or more snapshots of the same seed")
    read_back = [read_snapshot(folder, prim) for folder in args.snapshots]
    result = {"snapshots": [{"snapshot": f, "target": m.get("target")} for f, (_, m) in zip(args.snapshots, read_back)],
              "ceiling": noise_ceiling([tables for tables, _ in read_back])}
    Path(args.out).write_text(json.dumps(result, indent=2))
    lines = ["| tasks | n | top-1 | top-5 | Kendall tau | MAPE | tuning curve at 10 |", "|---|---|---|---|---|---|---|"]
    for name, m in result["ceiling"].items():
        lines.append(f"| {name} | {m['tasks']} | {m['top1_score']:.3f} | {m['top5_score']:.3f} | {m['kendall_tau']:.3f} | "
                     f"{m['mape']:.3f} | {m['tuning_curve_10']:.3f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
