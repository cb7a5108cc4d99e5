"""Benchmark: does the sharder get better round after round? (the experience window, DESIGN.md)

Each round draws a new trace on the same database (the source's ``layout_seed``: the same TPC-C regions,
social communities and database, hot keys; seed = round), as `aiprim run --rounds R` does. At every round
the sharder is trained twice on the round's training part: on it ``alone`` (what the sharder did before
stop 29), and on the ``window`` of up to 5 rounds joined by ``Sharder.merge_experience`` (what the
pipeline now trains on). Every classical peer learns from the same tables as the learned sharder beside
it. All are scored on the round's held-out newest 20%. Pinned to one core; rates are deterministic.

    .venv/bin/python benchmarks/sharder_rounds.py                       # tpcc, social, kv; 5 rounds
    .venv/bin/python benchmarks/sharder_rounds.py --workloads social --rounds 3
    .venv/bin/python benchmarks/sharder_rounds.py --plot docs/sharder-rounds.png   # from the stored results only

Writes benchmarks/results/sharder_rounds.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sharder import pinned_sharder  # noqa: E402  (benchmarks/sharder.py's set-up: one core, the config)

WINDOW = 5  # configs/pipeline.yaml's experience.rounds
# make run's small profile for the sharder (configs/pipeline.yaml), with social and kv sizes of the same scale
SMALL_SOURCE = {"warehouses": 8, "customers_per_district": 10, "catalogue_items": 200, "transactions": 12000, "shards": 4,
                "users": 2000, "products": 600, "initial_reviews": 4000, "communities": 12, "keys": 5000,
                "zipf_exponent": 0.9, "layout_seed": 0}
SMALL_TRAIN = {"max_epochs": 4, "steps_per_epoch": 8, "txns_per_step": 1024}


def score_round(prim, tables: dict, held_out: dict, params: dict) -> dict:
    from aiprim.primitives.sharder._metrics import evaluate_placers
    from aiprim.primitives.sharder._peers import PEERS

    with tempfile.TemporaryDirectory(prefix="aiprim-sharder-rounds-") as tmp:
        runtime = prim.train_runtime(tables, params, Path(tmp), seed=0)
        placers = {"learned": runtime, **{name: make(tables) for name, make in PEERS.items()}}
        scored = evaluate_placers(placers, held_out, tables, disruption_trials=0, reshard_budget=None)
    scored = {name: m for name, m in scored.items() if "skipped" not in m}
    peer, peer_rate = min(((n, m["distributed_txn_rate"]) for n, m in scored.items() if n != "learned"), key=lambda x: x[1])
    return {"learned": scored["learned"]["distributed_txn_rate"], "load": scored["learned"]["peak_to_mean_load"],
            "best_peer": peer, "peer": peer_rate, "transactions": int(tables["accesses"]["txn_id"].nunique())}


def plot(result: dict, path: Path) -> None:
    """Per workload: the held-out rate per round, trained on the round alone and on the window, beside the best peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r["workload"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.2 * len(workloads), 3.4), squeeze=False)
    for ax, workload in zip(axes[0], workloads):
        rows = [r for r in result["rows"] if r["workload"] == workload]
        rounds = [r["round"] for r in rows]
        ax.plot(rounds, [r["alone"]["learned"] for r in rows], "o--", color="tab:gray", label="sharder, the round alone")
        ax.plot(rounds, [r["window"]["learned"] for r in rows], "o-", color="tab:blue", label="sharder, the window of rounds")
        ax.plot(rounds, [r["window"]["peer"] for r in rows], "s:", color="tab:orange", label="best classical peer (window)")
        ax.set_title(workload)
        ax.set_xlabel("round")
        ax.set_xticks(rounds)
    axes[0][0].set_ylabel("held-out distributed_txn_rate (lower is better)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="tpcc,social,kv")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sharder_rounds"))
    parser.add_argument("--plot", help="draw the stored results (--out's .json) to this PNG, and measure nothing")
    args = parser.parse_args()
    if args.plot:
        plot(json.loads(Path(args.out + ".json").read_text()), Path(args.plot))
        return 0
    prim, config, base, _ = pinned_sharder()
    params = {**config["train"], **SMALL_TRAIN}
    started = time.perf_counter()
    rows = []
    for workload in args.workloads.split(","):
        source = {**base, **SMALL_SOURCE, "workload": workload}
        parts = []
        for round_number in range(args.rounds):
            train, held_out = prim.split(prim.generate(source, round_number)[0], 0.2)
            parts.append((f"round{round_number:03d}-{workload}", train))
            row = {"workload": workload, "round": round_number,
                   "alone": score_round(prim, train, held_out, params),
                   "window": score_round(prim, prim.merge_experience(parts[-WINDOW:]), held_out, params)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for workload in args.workloads.split(","):
        later = [r for r in rows if r["workload"] == workload and r["round"] > 0]
        if not later:
            continue
        summary[workload] = {
            "rounds_after_the_first": len(later),
            "window_better": sum(r["window"]["learned"] < r["alone"]["learned"] for r in later),
            "median_window_over_alone": statistics.median(r["window"]["learned"] / r["alone"]["learned"] for r in later),
            "alone_beats_best_peer": sum(r["alone"]["learned"] < r["alone"]["peer"] for r in later),
            "window_beats_best_peer": sum(r["window"]["learned"] < r["window"]["peer"] for r in later),
            "median_learned_over_peer": {k: statistics.median(r[k]["learned"] / r[k]["peer"] for r in later)
                                         for k in ("alone", "window")},
        }
    result = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, 1 core pinned",
              "command": "python benchmarks/sharder_rounds.py" + " ".join([""] + sys.argv[1:]),
              "source": SMALL_SOURCE, "train": SMALL_TRAIN, "window": WINDOW, "rows": rows, "summary": summary,
              "seconds": round(time.perf_counter() - started, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(result, indent=1))
    lines = [f"`{result['command']}` ({result['seconds']} s, {result['machine']})", "",
             "| workload | round | alone: learned / best peer | window: learned / best peer | window / alone |",
             "|---|---:|---|---|---:|"]
    for r in rows:
        a, w = r["alone"], r["window"]
        lines.append(f"| {r['workload']} | {r['round']} | {a['learned']:.4f} / {a['peer']:.4f} ({a['best_peer']}) | "
                     f"{w['learned']:.4f} / {w['peer']:.4f} ({w['best_peer']}) | {w['learned'] / a['learned']:.3f} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
