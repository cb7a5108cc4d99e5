"""Benchmark: does the learned compiler cost model win its first promotion, or does it tie XGBoost?

The first version of the compiler is promoted only if its Kendall tau on the held-out shapes beats the best
classical peer's (XGBoost's). `make run` decides that on one snapshot of 36 shapes, 6 of them held out, so one
run says little. This runs the same decision many times: snapshots of the default source drawn with several
seeds (compiled and timed here, as `make run` does), each split as the pipeline splits it
(`prim.split(tables, holdout_fraction)`), the learned model trained with the default config (no tuning) and
several training seeds, and evaluated beside XGBoost by the primitive's own `evaluate`.

    .venv/bin/python benchmarks/compiler_promotion.py                         # 3 snapshots x 3 seeds, ~15 min on 2 cores
    .venv/bin/python benchmarks/compiler_promotion.py --snapshots DIR,DIR     # snapshots measured before
    .venv/bin/python benchmarks/compiler_promotion.py --set dropout=0.1 --set weight_decay=0.001   # another config
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("kendall_tau", "top1_score", "top5_score", "mape")


def log(message: str) -> None:
    print(f"[bench compiler-promotion] {message}", file=sys.stderr, flush=True)


def train_params(config: dict, overrides: list[str]) -> dict:
    """``train:`` of configs/compiler.yaml with ``--set KEY=JSON`` overrides applied."""
    params = dict(config["train"])
    for item in overrides:
        key, value = item.split("=", 1)
        params[key] = json.loads(value)
    return params


def compiler_setup() -> tuple:
    """The compiler primitive with single-threaded torch, configs/compiler.yaml, and the pipeline's held-out fraction."""
    import torch

    from aiprim import primitives

    torch.set_num_threads(1)
    config = yaml.safe_load((ROOT / "configs" / "compiler.yaml").read_text())
    holdout = float(yaml.safe_load((ROOT / "configs" / "pipeline.yaml").read_text())["promotion"]["holdout_fraction"])
    return primitives.get("compiler"), config, holdout


def read_snapshots(folders: str, prim) -> list[tuple[str, dict]]:
    """(name, tables) of each comma-separated snapshot folder (its manifest may lie in a subfolder)."""
    from aiprim.primitives._snapshot import read_tables

    out = []
    for folder in folders.split(","):
        manifest = next(Path(folder).rglob("manifest.json"))
        out.append((manifest.parent.name, read_tables(manifest.parent, prim.schema)))
    return out


def snapshots(args, prim, config: dict, work: Path) -> list[tuple[str, dict]]:
    """(name, tables) of each snapshot: read from --snapshots, else drawn and measured with each --source-seeds seed."""
    from aiprim.primitives._snapshot import write_snapshot

    if args.snapshots:
        return read_snapshots(args.snapshots, prim)
    out = []
    source = {**config["source"], "cache_dir": str(ROOT / "data" / "kernels")}
    for seed in [int(s) for s in args.source_seeds.split(",")]:
        started = time.perf_counter()
        tables, _ = prim.generate(source, seed=seed)
        written = write_snapshot("compiler", prim.schema, tables, work / "snapshots", source=f"default source, seed {seed}")
        log(f"snapshot seed {seed}: {len(tables['tasks'])} tasks measured in {time.perf_counter() - started:.0f}s ({written})")
        out.append((f"seed-{seed}", tables))
    return out


def grouped(named_tables: list, prim, pairs: bool, keep_schedules: int) -> list[tuple[str, dict]]:
    """The snapshots as they are, or merged two by two (``merge_experience``: the later one's ids prefixed), each
    cut to its first ``keep_schedules`` schedules per shape where that is set."""
    if pairs:
        named_tables = [(f"{a}+{b}", prim.merge_experience([(a, ta), (b, tb)]))
                        for (a, ta), (b, tb) in zip(named_tables[::2], named_tables[1::2])]
    if keep_schedules:
        kept = []
        for name, tables in named_tables:
            m = tables["measurements"]
            kept.append((name, {**tables, "measurements": m[m.groupby("task_id").cumcount() < keep_schedules].reset_index(drop=True)}))
        named_tables = kept
    return named_tables


def parts(runtime, other_weights=()) -> dict:
    """The runtime as the pipeline scores it ("learned") and, where it blends a tree member in, its MLPs and its
    trees alone and its other blends (``tree_weight`` in ``other_weights``), scored in the same evaluation."""
    from aiprim.primitives.compiler import CompilerRuntime

    if runtime.forest is None or runtime.tree_weight == 0:
        return {"learned": runtime}
    weights = {"mlps": 0.0, "trees": 1.0} | {f"tree_weight_{w:g}": w for w in other_weights}
    return {"learned": runtime} | {name: CompilerRuntime(runtime.weights, {**runtime.meta, "tree_weight": w})
                                   for name, w in weights.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshots", default="", help="comma-separated snapshot folders (default: measure new ones)")
    parser.add_argument("--source-seeds", default="0,1,2", help="seeds of the snapshots to measure")
    parser.add_argument("--train-seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], help="KEY=JSON: override a key of train: in configs/compiler.yaml")
    parser.add_argument("--pairs", action="store_true",
                        help="merge consecutive snapshots in pairs, as the experience window merges them (twice the shapes)")
    parser.add_argument("--keep-schedules", type=int, default=0, help="keep only the first N schedules of each shape")
    parser.add_argument("--tree-weights", default="", help="comma-separated other tree weights to score beside the trained one")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compiler_promotion.json"))
    args = parser.parse_args()

    prim, config, holdout = compiler_setup()
    params = train_params(config, args.set)
    others = [float(w) for w in args.tree_weights.split(",") if w]
    rows = []
    with tempfile.TemporaryDirectory(prefix="aiprim-bench-") as tmp:
        for name, tables in grouped(snapshots(args, prim, config, Path(tmp)), prim, args.pairs, args.keep_schedules):
            train, held = prim.split(tables, holdout)
            for seed in [int(s) for s in args.train_seeds.split(",")]:
                started = time.perf_counter()
                runtime = prim.train_runtime(train, params, Path(tmp) / f"{name}-{seed}", seed=seed)
                seconds = round(time.perf_counter() - started, 1)
                report = prim.evaluate(parts(runtime, others), held, {**config["evaluate"], "training_tables": train})
                learned, xgb = report.candidates["learned"], report.baselines["xgboost"]
                row = {"snapshot": name, "train_seed": seed, "held_out_tasks": int(len(held["tasks"])),
                       "learned": {k: learned.get(k) for k in METRICS}, "xgboost": {k: xgb.get(k) for k in METRICS},
                       "seconds": seconds}
                row |= {part: {k: report.candidates[part].get(k) for k in METRICS} for part in report.candidates if part != "learned"}
                rows.append(row)
                alone = f" (MLPs alone {row['mlps']['kendall_tau']:.3f}, trees alone {row['trees']['kendall_tau']:.3f})" if "mlps" in row else ""
                log(f"{name} seed {seed}: tau {learned['kendall_tau']:.3f} vs XGBoost {xgb['kendall_tau']:.3f}{alone}")
    tau = np.array([r["learned"]["kendall_tau"] for r in rows])
    peer = np.array([r["xgboost"]["kendall_tau"] for r in rows])
    summary = {"runs": len(rows), "learned_ahead": int((tau > peer).sum()),
               "median_tau": {"learned": float(np.median(tau)), "xgboost": float(np.median(peer))},
               "median_margin": float(np.median(tau - peer)),
               **{f"{part}_ahead": int(sum(r[part]["kendall_tau"] > r["xgboost"]["kendall_tau"] for r in rows))
                  for part in (rows[0] if rows else {}) if isinstance(rows[0][part], dict) and part not in ("learned", "xgboost")},
               "median": {m: {model: float(np.median([r[model][m] for r in rows]))
                              for model in rows[0] if isinstance(rows[0][model], dict)} for m in METRICS} if rows else {}}
    result = {"machine": platform.processor() or platform.machine(), "params": params, "summary": summary, "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"| snapshot | seed | learned tau | XGBoost tau | learned top-1 | XGBoost top-1 | learned MAPE | XGBoost MAPE |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        l, x = r["learned"], r["xgboost"]
        print(f"| {r['snapshot']} | {r['train_seed']} | {l['kendall_tau']:.3f} | {x['kendall_tau']:.3f} | {l['top1_score']:.3f} | "
              f"{x['top1_score']:.3f} | {l['mape']:.3f} | {x['mape']:.3f} |")
    print(f"\nlearned ahead in {summary['learned_ahead']} of {summary['runs']}; median tau {summary['median_tau']['learned']:.3f} "
          f"vs {summary['median_tau']['xgboost']:.3f} (median margin {summary['median_margin']:+.3f}); results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
