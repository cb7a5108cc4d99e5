"""Benchmark: what the learned sharder's gradient steps add to the placement it is built from.

The sharder's runtime is built in two parts (``primitives/sharder/_model.py``): a construction from the
training trace (the co-access embedding, k-means prototypes, a balanced coarse partition of the clusters over
the shards) that initialises the kernel, then ``max_epochs`` x ``steps_per_epoch`` gradient steps on the
expected distributed-transaction objective, then the export (soft placement, balanced label propagation over
the trace, packing). This trains each snapshot twice, in one session, with the config's ``train`` section:
as configured (``trained``), and with the gradient steps taken out (``constructed``: one step at a learning
rate of 1e-9, the initialisation as it is, since the pipeline wants one validation epoch), and scores both beside
the classical peers on the newest 20% of the trace.

    .venv/bin/python benchmarks/sharder_steps.py                  # the 4 workloads at a quarter scale, seeds 0 and 1
    .venv/bin/python benchmarks/sharder_steps.py --full --seeds 1 # the config's scale (about 3x longer)
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sharder import WORKLOADS, pinned_sharder  # noqa: E402  (benchmarks/sharder.py's workloads and set-up)

NO_STEPS = {"max_epochs": 1, "steps_per_epoch": 1, "lr": 1e-9}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the config's transactions (default: a quarter)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sharder_steps.json"))
    args = parser.parse_args()
    prim, config, base, evaluate = pinned_sharder()
    results = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, 1 core pinned",
               "command": "python benchmarks/sharder_steps.py" + " ".join([""] + sys.argv[1:]), "runs": []}
    for workload, overrides in WORKLOADS.items():
        source = {**base, **overrides}
        if not args.full:
            source["transactions"] = int(source.get("transactions", 200_000)) // 4
        for seed in range(args.seeds):
            tables, _ = prim.generate(source, seed=seed)
            train, held_out = prim.split(tables, 0.2)
            row = {"workload": workload, "seed": seed}
            for label, params in (("trained", config["train"]), ("constructed", {**config["train"], **NO_STEPS})):
                started = time.perf_counter()
                with tempfile.TemporaryDirectory(prefix="aiprim-bench-") as tmp:  # checkpoints only; the runtime lives in memory
                    runtime = prim.train_runtime(train, params, Path(tmp), seed)
                row[f"{label}_train_s"] = round(time.perf_counter() - started, 1)
                report = prim.evaluate(runtime, held_out, {**evaluate, "training_tables": train,
                                                           "baselines": label == "trained"})
                row[label] = report.metrics["distributed_txn_rate"]
                row[f"{label}_peak_to_mean_load"] = report.metrics["peak_to_mean_load"]
                if label == "trained":
                    peers = {n: m["distributed_txn_rate"] for n, m in report.baselines.items() if "distributed_txn_rate" in m}
                    row["best_peer"], row["best_peer_rate"] = min(peers.items(), key=lambda item: item[1])
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
    lines = ["| workload | seeds | trained | constructed (no gradient steps) | constructed / trained | best peer | "
             "train s (trained / constructed) |", "| --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for workload in WORKLOADS:
        runs = [r for r in results["runs"] if r["workload"] == workload]
        med = {k: float(np.median([r[k] for r in runs])) for k in ("trained", "constructed", "best_peer_rate",
                                                                   "trained_train_s", "constructed_train_s")}
        lines.append(f"| {workload} | {len(runs)} | {med['trained']:.4f} | {med['constructed']:.4f} | "
                     f"{med['constructed'] / med['trained']:.3f} | {runs[0]['best_peer']} {med['best_peer_rate']:.4f} | "
                     f"{med['trained_train_s']:.0f} / {med['constructed_train_s']:.0f} |")
    results["table"] = "\n".join(lines)
    print("\n" + results["table"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    Path(args.out).with_suffix(".md").write_text(results["table"] + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
