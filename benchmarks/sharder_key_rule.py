"""Benchmark: which attribute may key the sharder's placement: the rule before stop 22 against today's.

The construction keys placement by an attribute (all rows of one warehouse move together) when that attribute
explains enough of the co-access and its groups are small enough. Before stop 22, "small enough" was a
largest group of at most 0.6 / shards of the rows; today it is a largest group that fits on the largest shard
(its capacity share, within ``pack_slack``). Both are run side by side, in one session, on the embedded
workloads (as `benchmarks/sharder.py` draws them) and on deployments drawn from the transfer family (small TPC-C
with 4 to 16 warehouses on 2 to 8 shards, social, key-value), each trained as configured and scored with every
peer on its newest 20%.

    .venv/bin/python benchmarks/sharder_key_rule.py --quick                       # quarter-scale workloads
    .venv/bin/python benchmarks/sharder_key_rule.py --quick --family 5000-5011    # + 12 drawn deployments
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sharder import REPO, WORKLOADS, pinned_sharder


def rule_before_stop_22(items: pd.DataFrame, scores: dict, shares: np.ndarray, slack: float, min_score: float):
    """The old eligibility: no value holding more than 0.6 / shards of the rows."""
    eligible = {}
    for column, score in scores.items():
        values = items[column].dropna()
        if values.empty or score < min_score:
            continue
        if values.value_counts().iloc[0] / len(items) <= 0.6 / len(shares):
            eligible[column] = score
    return max(eligible, key=lambda c: (eligible[c], c)) if eligible else None


def score(prim, tables: dict, params: dict, evaluate: dict) -> dict:
    train, held_out = prim.split(tables, 0.2)
    with tempfile.TemporaryDirectory(prefix="aiprim-bench-") as tmp:  # checkpoints only; the runtime lives in memory
        runtime = prim.train_runtime(train, params, Path(tmp), 0)
    report = prim.evaluate(runtime, held_out, {**evaluate, "training_tables": train, "disruption_trials": 1})
    peers = {k: v["distributed_txn_rate"] for k, v in report.baselines.items() if "distributed_txn_rate" in v}
    best = min(peers, key=peers.get)
    return {"rate": report.metrics["distributed_txn_rate"], "peak": report.metrics["peak_to_mean_load"],
            "key": runtime.key_column, "best_peer": best, "peer_rate": peers[best],
            "peer_peak": report.baselines[best].get("peak_to_mean_load")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a quarter of the workloads' transactions")
    parser.add_argument("--family", default="", help="drawn deployments, e.g. 5000-5011 (the seeds of sharder_transfer.py)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sharder_key_rule.json"))
    args = parser.parse_args()

    prim, config, base, evaluate = pinned_sharder()
    from aiprim.primitives.sharder import _model
    from aiprim.primitives.sharder._transfer import draw_deployment

    params = dict(config["train"])
    cases = []
    for name, overrides in WORKLOADS.items():
        source = {**base, **overrides}
        if args.quick:
            source["transactions"] = int(source.get("transactions", 40_000)) // 4
        cases.append((name, lambda source=source: prim.generate(source, seed=0)[0]))
    if args.family:
        low, high = (int(x) for x in args.family.split("-"))
        cases += [(f"family {seed}", lambda seed=seed: draw_deployment(seed, (6000, 16000))) for seed in range(low, high + 1)]

    today = _model._choose_key_column
    rows = []
    for name, draw in cases:
        tables = draw()
        row = {"case": name, "shards": len(tables["shards"]), "rows": len(tables["items"])}
        for label, rule in (("before", rule_before_stop_22), ("today", today)):
            _model._choose_key_column = rule
            started = time.perf_counter()
            try:
                row[label] = {**score(prim, tables, params, evaluate), "seconds": round(time.perf_counter() - started, 1)}
            finally:
                _model._choose_key_column = today
        rows.append(row)
        b, t = row["before"], row["today"]
        print(f"| {name} | {row['shards']} | {b['key']} {b['rate']:.4f} ({b['peak']:.2f}) | {t['key']} {t['rate']:.4f} "
              f"({t['peak']:.2f}) | {t['best_peer']} {t['peer_rate']:.4f} ({t['peer_peak']:.2f}) |", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": "benchmarks/sharder_key_rule.py" + (" --quick" if args.quick else "")
                                          + (f" --family {args.family}" if args.family else ""), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
