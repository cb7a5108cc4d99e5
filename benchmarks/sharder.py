"""Benchmark: the learned sharder beside every classical peer, on the three embedded workloads.

For each workload (TPC-C-like as the spec draws it and with regional remote
work, Epinions-like social, YCSB-like key-value) and
seed, one snapshot is generated with ``configs/sharder.yaml``'s source (the
workload swapped), the model is trained on the oldest 80% of the trace with
the config's ``train`` section, and it and every peer are scored on the
newest 20% (rows inserted there included), in one session. Medians over seeds,
and the learned model's ratio to each peer on the primary metric. Pinned to
one CPU core, so ``placements_per_s`` is a one-core number. Results go to
benchmarks/results/sharder.json and a markdown table on stdout (and .md).

    .venv/bin/python benchmarks/sharder.py                 # default scale, 1 seed (~20 min on 2 cores)
    .venv/bin/python benchmarks/sharder.py --quick         # a quarter of the transactions
    .venv/bin/python benchmarks/sharder.py --seeds 3 --only tpcc
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

REPO = Path(__file__).resolve().parents[1]
# name -> source overrides; "tpcc_regional" is TPC-C with remote work that stays mostly within hidden
# regions of 4 warehouses (by location, not by warehouse number): structure a DBA's rule does not see.
WORKLOADS = {"tpcc": {"workload": "tpcc", "regions": 0}, "tpcc_regional": {"workload": "tpcc", "regions": 8},
             "social": {"workload": "social"}, "kv": {"workload": "kv"}}
KEYS = ("distributed_txn_rate", "shards_per_txn", "peak_to_mean_load", "moved_fraction", "moved_on_add",
        "disruption_ratio_add", "disruption_ratio_remove", "distributed_txn_rate_after_add", "placements_per_s")


def run_one(prim, source: dict, params: dict, evaluate: dict, seed: int) -> tuple[dict, dict]:
    started = time.perf_counter()
    tables, _ = prim.generate(source, seed=seed)
    generated = time.perf_counter()
    train, held_out = prim.split(tables, 0.2)
    with tempfile.TemporaryDirectory(prefix="aiprim-bench-") as tmp:  # checkpoints only; the runtime lives in memory
        runtime = prim.train_runtime(train, params, Path(tmp), seed)
    trained = time.perf_counter()
    report = prim.evaluate(runtime, held_out, {**evaluate, "training_tables": train})
    done = time.perf_counter()
    rows = {"learned": dict(report.metrics), **{k: dict(v) for k, v in report.baselines.items()}}
    timing = {"generate_s": generated - started, "train_s": trained - generated, "evaluate_s": done - trained,
              "rows": len(tables["items"]), "transactions": int(tables["accesses"]["txn_id"].nunique()),
              "key_column": runtime.key_column, "export": runtime.training_report}
    return rows, timing


def median_rows(runs: list[dict]) -> dict:
    out = {}
    for name in runs[0]:
        if "skipped" in runs[0][name]:
            out[name] = runs[0][name]
            continue
        out[name] = {k: float(np.median([r[name][k] for r in runs])) for k in runs[0][name] if k in KEYS}
    return out


def table(workload: str, rows: dict, timing: dict, seeds: int, guardrails) -> str:
    learned = rows["learned"]["distributed_txn_rate"]
    peers = {n: m["distributed_txn_rate"] for n, m in rows.items() if n != "learned" and "distributed_txn_rate" in m}
    best = min(peers, key=peers.get)
    broken = [b for g in guardrails if (b := g.broken_by(rows["learned"]))]
    verdict = ("would be promoted" if learned < peers[best] and not broken else
               "would not be promoted" + (f" (guardrail: {'; '.join(broken)})" if broken else " (not strictly better)"))
    lines = [
        f"#### {workload}: {timing['rows']:,} rows, {timing['transactions']:,} transactions "
        f"(median of {seeds} seed{'s' if seeds > 1 else ''}; key column: {timing['key_column']})",
        "",
        f"learned / best peer ({best}) = {learned / peers[best]:.3f}x on distributed_txn_rate: {verdict} "
        f"(generate {timing['generate_s']:.0f}s, train {timing['train_s']:.0f}s, evaluate {timing['evaluate_s']:.0f}s)",
        "",
        "| placement | distributed txns | learned / it | shards per txn | peak/mean load | moved | moved on add (ratio) | "
        "remove ratio | distributed after add | rows/s (1 core) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in rows.items():
        if "skipped" in m:
            lines.append(f"| {name} | skipped: {m['skipped']} | | | | | | | | |")
            continue
        ratio = learned / m["distributed_txn_rate"] if m["distributed_txn_rate"] > 0 else float("nan")
        lines.append(
            f"| {name} | {m['distributed_txn_rate']:.4f} | {ratio:.3f} | {m['shards_per_txn']:.2f} | "
            f"{m['peak_to_mean_load']:.3f} | {m['moved_fraction']:.3f} | "
            f"{m['moved_on_add']:.3f} ({m['disruption_ratio_add']:.2f}) | "
            f"{m.get('disruption_ratio_remove', float('nan')):.2f} | {m['distributed_txn_rate_after_add']:.4f} | "
            f"{m['placements_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


def pinned_sharder():
    """Logging, this process pinned to one core with single-threaded torch, and the sharder with
    configs/sharder.yaml: (primitive, config, source without its seed, evaluate without the guardrails)."""
    from aiprim._console import setup_logging

    setup_logging()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import torch
    import yaml

    torch.set_num_threads(1)
    from aiprim import primitives

    config = yaml.safe_load((REPO / "configs" / "sharder.yaml").read_text())
    base = {k: v for k, v in config["source"].items() if k != "seed"}
    evaluate = {k: v for k, v in config["evaluate"].items() if not k.startswith("max_")}
    return primitives.get("sharder"), config, base, evaluate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a quarter of the transactions")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--only", choices=list(WORKLOADS), help="one workload (merged into an existing results file)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sharder.json"))
    args = parser.parse_args()
    prim, config, base, evaluate = pinned_sharder()
    results = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, 1 core pinned",
               "command": "python benchmarks/sharder.py" + " ".join([""] + sys.argv[1:]), "workloads": {}}
    markdown = []
    if args.only and Path(args.out).exists():  # one workload rerun: keep the others' results
        results["workloads"] = json.loads(Path(args.out).read_text()).get("workloads", {})
    for workload, overrides in WORKLOADS.items():
        if args.only and workload != args.only:
            continue
        source = {**base, **overrides}
        if args.quick:
            source["transactions"] = int(source.get("transactions", 200_000)) // 4
        runs, timings = [], []
        for seed in range(args.seeds):
            rows, timing = run_one(prim, source, config["train"], evaluate, seed)
            runs.append(rows)
            timings.append(timing)
        rows = median_rows(runs)
        results["workloads"][workload] = {"median": rows, "runs": runs, "timing": timings}
        markdown.append(table(workload, rows, timings[0], args.seeds, prim.guardrails(config["evaluate"])))
        print(markdown[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    guardrails = prim.guardrails(config["evaluate"])
    every = [table(name, r["median"], r["timing"][0], len(r["runs"]), guardrails) for name, r in results["workloads"].items()]
    Path(args.out).with_suffix(".md").write_text("\n".join(every))
    return 0


if __name__ == "__main__":
    sys.exit(main())
