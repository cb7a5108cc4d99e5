"""Benchmark: how few measurements on a new machine does the compiler cost model need, starting from another's model?

A snapshot records its target (ISA and core count, e.g. x86_64-avx2-2c). Target A's model is trained on all of A's
snapshot; target B's snapshot is split as the pipeline splits it (`prim.split(tables, holdout_fraction)`: whole
shapes held out). On B's held-out shapes, scored by the primitive's own `evaluate`, side by side:

    zero-shot      A's model as it is
    scratch 100%   trained from random weights on all of B's training part (the ceiling; its measurements are 100%)
    scratch f      the same on a fraction f of B's training tasks (whole shapes)
    fine-tune f    A's model warm-started (`_model.warm_start`) and trained on those tasks: the last layer, or all
                   (--fine-tune-epochs 30 at --fine-tune-lr 0.001: it starts close, and few tasks overfit fast)
    xgboost f      the peer, fitted on those tasks

for each training seed (which also draws the subsets) and each source snapshot of A, reporting medians.

    # B: the default source with another seed, measured in a process pinned to one core (target ...-1c), once
    taskset -c 1 .venv/bin/python benchmarks/compiler_transfer.py --measure-seed 100 --measure-out /tmp/cxfer
    .venv/bin/python benchmarks/compiler_transfer.py --source-snapshot /tmp/cexp3/s12_0 --target-snapshot /tmp/cxfer
    # A: the lent H100's host and GPU; B: the lent H200's (kept telemetry of both; B's shapes dropped from A)
    .venv/bin/python benchmarks/compiler_transfer.py --source-snapshot tests/fixtures/placement-h100 \
        --target-snapshot tests/fixtures/placement-h200 --drop-target-tasks
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from compiler_promotion import train_params  # noqa: E402  (one reading of --set for both benchmarks)

METRICS = ("kendall_tau", "top1_score", "mape")
TIE = 0.01  # "reaches from-scratch quality": Kendall tau at most this far below scratch on all of B's training part


def log(message: str) -> None:
    print(f"[bench compiler-transfer] {message}", file=sys.stderr, flush=True)


def read_snapshot(folder: str, prim) -> tuple[dict, dict]:
    """(tables, manifest) of the snapshot in ``folder`` (the snapshot itself or a root above it), or of the
    telemetry ``compiler_placement.py`` keeps of a lent GPU host (``tests/fixtures/placement-*``: both of the
    host's targets, CPU and GPU, read as one machine)."""
    from aiprim.primitives._snapshot import read_tables

    if (Path(folder) / "placement_tasks.parquet").is_file():
        from compiler_placement import read_telemetry

        tables = read_telemetry(Path(folder))
        return tables, {"target": f"{'+'.join(sorted(tables['tasks']['target'].dropna().unique()))} ({Path(folder).name})"}
    manifest = next(Path(folder).rglob("manifest.json"))
    return read_tables(manifest.parent, prim.schema), json.loads(manifest.read_text())


def measure(prim, config: dict, seed: int, out: Path) -> Path:
    """A snapshot of the default source drawn with ``seed``, measured in this process (so on its CPU affinity)."""
    from aiprim.primitives._snapshot import write_snapshot

    source = {**config["source"], "cache_dir": str(ROOT / "data" / "kernels")}
    started = time.perf_counter()
    tables, extra = prim.generate(source, seed=seed)
    written = write_snapshot("compiler", prim.schema, tables, out, source=f"default source, seed {seed}", extra=extra)
    log(f"snapshot seed {seed} ({extra.get('target')}): {len(tables['tasks'])} tasks in {time.perf_counter() - started:.0f}s: {written}")
    return written


def task_subset(tables: dict, n: int, seed: int) -> dict:
    """The first ``n`` tasks of a seeded order that takes the families in turn, so even a few tasks cover them all.

    One order per seed: each fraction's tasks contain the smaller fractions' (fewer measurements add, never swap)."""
    rng = np.random.default_rng(seed)
    by_kernel = [list(rng.permutation(part["task_id"].to_numpy())) for _, part in tables["tasks"].groupby("kernel", sort=True)]
    order = [queue[i] for i in range(max(map(len, by_kernel))) for queue in by_kernel if i < len(queue)]
    chosen = set(order[:n])
    return {"tasks": tables["tasks"][tables["tasks"]["task_id"].isin(chosen)].reset_index(drop=True),
            "measurements": tables["measurements"][tables["measurements"]["task_id"].isin(chosen)].reset_index(drop=True)}


def measurements(tables: dict) -> int:
    """The measured schedules a model learns from (finished or timed out), the cost of a training set."""
    from aiprim.primitives.compiler._model import training_rows

    return int(len(training_rows(tables["tasks"], tables["measurements"])[1]))


def fine_tune(prim, tables: dict, params: dict, source, layers: int | None, directory: Path, seed: int):
    """``source`` (a CompilerRuntime) trained further on ``tables``: its last ``layers`` linear layers (None: all),
    on its own standardisation. The same trainer as ``Primitive.train_runtime``, from the copied weights."""
    import lightning as L

    from aiprim.primitives._params import pick
    from aiprim.primitives.compiler._model import CostDataModule, warm_start

    typed = prim.params(params, where="compiler fine-tune params")
    L.seed_everything(seed, verbose=False)
    datamodule = CostDataModule(tables["tasks"], tables["measurements"], seed=seed, scaling=source.meta,
                                **pick(typed, CostDataModule))
    module = warm_start(prim.build_module(datamodule, typed), source.weights, source.meta, layers)
    trainer = L.Trainer(max_epochs=typed.max_epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0)
    trainer.fit(module, datamodule)
    directory.mkdir(parents=True, exist_ok=True)
    prim.export_runtime(module, datamodule, directory)
    return prim.load_runtime(directory)


def metrics(report, name: str) -> dict:
    found = report.candidates.get(name) or report.baselines[name]
    return {k: float(found[k]) for k in METRICS}


def run(args, prim, config: dict, params: dict, holdout: float, work: Path) -> dict:
    target_tables, target_manifest = read_snapshot(args.target_snapshot, prim)
    train, held = prim.split(target_tables, holdout)
    fractions = [float(f) for f in args.fractions.split(",")]
    n_train = len(train["tasks"])
    # At least two tasks: the model's data module needs two to train on (and the ranking loss pairs within a task).
    sizes = {f: min(n_train, max(2, int(round(f * n_train)))) for f in fractions}
    tuned = {**params, "max_epochs": args.fine_tune_epochs, "lr": args.fine_tune_lr}
    evaluate = dict(config["evaluate"])
    sources = []
    for folder in args.source_snapshot.split(","):
        tables, manifest = read_snapshot(folder, prim)
        dropped = 0
        if args.drop_target_tasks:  # A never measured what B holds: a prior, not a lookup of B's shapes
            kept = {name: t[~t["task_id"].isin(target_tables["tasks"]["task_id"])].reset_index(drop=True)
                    for name, t in tables.items()}
            dropped, tables = len(tables["tasks"]) - len(kept["tasks"]), kept
        shared = sorted(set(tables["tasks"]["task_id"]) & set(held["tasks"]["task_id"]))
        sources.append({"snapshot": folder, "target": manifest.get("target"), "tasks": len(tables["tasks"]),
                        "tasks_of_target_dropped": dropped, "held_out_shapes_also_in_source": shared, "tables": tables})
    rows = []
    for seed in [int(s) for s in args.train_seeds.split(",")]:
        started = time.perf_counter()
        # What learns on B alone (scratch, XGBoost) does not depend on A: once per seed, whatever the sources.
        scratch = prim.train_runtime(train, params, work / f"scratch-{seed}", seed=seed)
        report = prim.evaluate({"scratch": scratch}, held, {**evaluate, "training_tables": train})
        for name in ("scratch", "xgboost"):
            rows.append({"source": None, "seed": seed, "method": name, "fraction": 1.0, "tasks": n_train,
                         "measurements": measurements(train), **metrics(report, name)})
        subsets = {f: task_subset(train, sizes[f], seed) for f in fractions}
        for f, subset in subsets.items():
            runtime = prim.train_runtime(subset, params, work / f"scratch-{seed}-{f}", seed=seed)
            report = prim.evaluate({"scratch": runtime}, held, {**evaluate, "training_tables": subset})
            for name in ("scratch", "xgboost"):
                rows.append({"source": None, "seed": seed, "method": name, "fraction": f, "tasks": len(subset["tasks"]),
                             "measurements": measurements(subset), **metrics(report, name)})
        for entry in sources:
            tag = f"{Path(entry['snapshot']).name}-{seed}"
            base = {"source": entry["snapshot"], "seed": seed}
            source = prim.train_runtime(entry["tables"], params, work / f"source-{tag}", seed=seed)
            report = prim.evaluate({"zero-shot": source}, held, {**evaluate, "baselines": False})
            rows.append({**base, "method": "zero-shot", "fraction": 0.0, "tasks": 0, "measurements": 0, **metrics(report, "zero-shot")})
            for f, subset in subsets.items():
                candidates = {"fine-tune last 1": fine_tune(prim, subset, tuned, source, 1, work / f"ft1-{tag}-{f}", seed),
                              "fine-tune all": fine_tune(prim, subset, tuned, source, None, work / f"ftall-{tag}-{f}", seed)}
                report = prim.evaluate(candidates, held, {**evaluate, "baselines": False})
                for name in candidates:
                    rows.append({**base, "method": name, "fraction": f, "tasks": len(subset["tasks"]),
                                 "measurements": measurements(subset), **metrics(report, name)})
        tau = {(r["method"], r["source"]): r["kendall_tau"] for r in rows if r["seed"] == seed and r["fraction"] in (0.0, 1.0)}
        log(f"seed {seed}: {time.perf_counter() - started:.0f}s; tau scratch 100% {tau['scratch', None]:.3f}, zero-shot "
            + ", ".join(f"{tau['zero-shot', e['snapshot']]:.3f}" for e in sources))
    for entry in sources:
        del entry["tables"]
    return {"target": {"snapshot": args.target_snapshot, "target": target_manifest.get("target"), "tasks": len(target_tables["tasks"]),
                       "train_tasks": n_train, "held_out_tasks": len(held["tasks"]), "train_measurements": measurements(train)},
            "sources": sources, "rows": rows}


def summarise(rows: list[dict]) -> tuple[list[dict], dict]:
    """Medians over seeds (and source snapshots) of each (method, fraction), and the verdict."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["fraction"]), []).append(r)
    table = [{"method": method, "fraction": fraction, "runs": len(part),
              "tasks": int(np.median([r["tasks"] for r in part])), "measurements": int(np.median([r["measurements"] for r in part])),
              **{k: float(np.median([r[k] for r in part])) for k in METRICS}}
             for (method, fraction), part in groups.items()]
    order = {"zero-shot": 0, "scratch": 1, "fine-tune last 1": 2, "fine-tune all": 3, "xgboost": 4}
    table.sort(key=lambda r: (r["fraction"] if r["method"] != "zero-shot" else -1, order[r["method"]]))
    ceiling = next(r for r in table if r["method"] == "scratch" and r["fraction"] == 1.0)
    verdict = {"scratch_100_tau": ceiling["kendall_tau"], "tie": TIE, "smallest_fraction": {}}
    for method in ("scratch", "fine-tune last 1", "fine-tune all", "xgboost"):
        reached = [r for r in table if r["method"] == method and r["fraction"] < 1.0
                   and r["kendall_tau"] >= ceiling["kendall_tau"] - TIE]
        best = min(reached, key=lambda r: r["fraction"]) if reached else None
        verdict["smallest_fraction"][method] = None if best is None else {
            "fraction": best["fraction"], "measurements": best["measurements"],
            "share_of_scratch_measurements": best["measurements"] / ceiling["measurements"]}
    return table, verdict


def markdown(table: list[dict], verdict: dict) -> str:
    lines = ["| method | fraction of B's training tasks | tasks | measurements | Kendall tau | top-1 | MAPE |",
             "|---|---|---|---|---|---|---|"]
    for r in table:
        fraction = "-" if r["method"] == "zero-shot" else f"{r['fraction']:.0%}"
        lines.append(f"| {r['method']} | {fraction} | {r['tasks']} | {r['measurements']} | {r['kendall_tau']:.3f} | "
                     f"{r['top1_score']:.3f} | {r['mape']:.3f} |")
    lines.append("")
    for method, found in verdict["smallest_fraction"].items():
        reached = ("not reached at any fraction below 100%" if found is None else
                   f"reached at {found['fraction']:.0%} of the tasks ({found['measurements']} measurements, "
                   f"{found['share_of_scratch_measurements']:.0%} of scratch's)")
        lines.append(f"- {method}: tau within {verdict['tie']} of scratch on 100% ({verdict['scratch_100_tau']:.3f}): {reached}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-snapshot", default="/tmp/cexp3/s12_0", help="target A: snapshot folder(s), comma-separated (one repetition each)")
    parser.add_argument("--target-snapshot", help="target B: snapshot folder")
    parser.add_argument("--train-seeds", default="0,1,2", help="training seeds; each also draws B's training subsets")
    parser.add_argument("--fractions", default="0.05,0.1,0.2,0.5", help="fractions of B's training tasks")
    parser.add_argument("--fine-tune-epochs", type=int, default=30)
    parser.add_argument("--fine-tune-lr", type=float, default=1e-3)
    parser.add_argument("--measure-seed", type=int, help="measure a snapshot of the default source with this seed and exit")
    parser.add_argument("--measure-out", default="/tmp/cxfer", help="root folder of the measured snapshot")
    parser.add_argument("--drop-target-tasks", action="store_true",
                        help="drop from A every task (shape) B holds, so that A's model has never seen B's shapes")
    parser.add_argument("--set", action="append", default=[], help="KEY=JSON: override a key of train: in configs/compiler.yaml")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compiler_transfer.json"))
    args = parser.parse_args()

    import torch

    from aiprim import primitives

    torch.set_num_threads(1)
    prim = primitives.get("compiler")
    config = yaml.safe_load((ROOT / "configs" / "compiler.yaml").read_text())
    if args.measure_seed is not None:
        print(measure(prim, config, args.measure_seed, Path(args.measure_out)))
        return 0
    if not args.target_snapshot:
        parser.error("--target-snapshot is required (or --measure-seed to measure one)")
    holdout = float(yaml.safe_load((ROOT / "configs" / "pipeline.yaml").read_text())["promotion"]["holdout_fraction"])
    params = train_params(config, args.set)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aiprim-bench-") as tmp:
        result = run(args, prim, config, params, holdout, Path(tmp))
    table, verdict = summarise(result["rows"])
    result = {"machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores",
              "params": params, "fine_tune": {"max_epochs": args.fine_tune_epochs, "lr": args.fine_tune_lr,
                                              "layers": {"fine-tune last 1": 1, "fine-tune all": "all"}},
              "holdout_fraction": holdout, "train_seeds": args.train_seeds, **result, "median": table, "verdict": verdict,
              "seconds": round(time.perf_counter() - started)}
    text = markdown(table, verdict)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    header = (f"Target A ({', '.join(s['target'] or 'no target recorded' for s in result['sources'])}) -> "
              f"target B ({result['target']['target']}), "
              f"{result['target']['held_out_tasks']} held-out shapes of B; medians over seeds {args.train_seeds}\n\n")
    out.with_suffix(".md").write_text(header + text)
    print(text)
    log(f"{result['seconds']}s; results: {out}, {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
