"""Benchmark: the transfer stage for the sharder (issue 13): construction knobs decoded from a deployment's descriptor.

Deployments are drawn from the sharder source's family (``primitives/sharder/_transfer.draw_deployment``:
workload, shards and capacities, scale, regions and remote shares, communities, key skew; table, item and
attribute names never generated). The transfer model is fitted on ``--train`` of them (a knob grid
constructed and scored on each one's training trace); each of ``--held-out`` others is then scored on its
held-out newest 20% with:

- ``peer``: the best classical peer (the floor), ``scratch``: the sharder trained as configured
  (configs/sharder.yaml's ``train``, gradient steps included) on its training part (the ceiling);
- ``transfer``: knobs decoded from its descriptor, construction without gradient steps (zero-shot);
  ``search@3``: the 3 best predicted knob settings tried on its own training trace, the best built;
- ``default``: the construction with configs/sharder.yaml's knobs;
- ``nearest``: the knobs that were best on the population member nearest by descriptor (OtterTune's mapping);
- ``shuffled``: knobs decoded from another held-out deployment's descriptor (the leakage control).

G = (peer - method) / (peer - scratch) on distributed_txn_rate, where scratch beats the peer (elsewhere G is
undefined and the deployment is counted apart). Pinned to one core. Writes
benchmarks/results/sharder_transfer.json and .md.

    .venv/bin/python benchmarks/sharder_transfer.py                      # population 6, held-out 6
    .venv/bin/python benchmarks/sharder_transfer.py --train 3 --held-out 2 --quick
    .venv/bin/python benchmarks/sharder_transfer.py --train 8 --held-out 6 --held-out-transactions 50000,100000  # out of the family
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
from sharder import pinned_sharder  # noqa: E402  (benchmarks/sharder.py's set-up: one core, the config)

METRIC = "distributed_txn_rate"


def gain(peer: float, method: float, scratch: float) -> float | None:
    return (peer - method) / (peer - scratch) if peer - scratch > 1e-9 else None


def deployment(model, prim, seed: int, transactions: tuple[int, int]) -> dict:
    tables = model.draw_deployment(seed, transactions=transactions)
    train, held_out = prim.split(tables, 0.2)
    return {"seed": seed, "rows": len(tables["items"]), "shards": len(tables["shards"]),
            "transactions": int(tables["accesses"]["txn_id"].nunique()), "train": train, "held_out": held_out,
            "descriptor": prim.describe_deployment(train)}


def workload_of(d: dict) -> str:
    """What the drawn deployment is (read back from its descriptor: tables and attributes)."""
    from aiprim.primitives.sharder._descriptor import FIELDS

    fields = dict(zip(FIELDS, d["descriptor"]))
    if fields["log_tables"] == 0.0:
        return "kv"
    return "tpcc" if fields["replicated_row_fraction"] > 0 else "social"


def main() -> int:
    # Every folder this run makes (trained and decoded runtimes) lands in one that is removed at exit.
    scratch = tempfile.TemporaryDirectory(prefix="aiprim-sharder-transfer-")
    tempfile.tempdir = scratch.name
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=6, help="population size")
    parser.add_argument("--held-out", type=int, default=6)
    parser.add_argument("--transactions", default="6000,16000", help="transactions per deployment, log-uniform: LO,HI")
    parser.add_argument("--held-out-transactions", help="the held-out deployments' own LO,HI (out of the family: "
                        "traces longer than any member's); default: --transactions")
    parser.add_argument("--quick", action="store_true", help="a small knob grid and 2 scratch epochs: a smoke run")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sharder_transfer"))
    args = parser.parse_args()
    prim, config, _, evaluate = pinned_sharder()
    from aiprim.primitives.sharder._transfer import SharderTransferParams, knobs_of

    model = prim.transfer_model()
    transactions = tuple(int(x) for x in args.transactions.split(","))
    scratch_params = dict(config["train"])
    params = SharderTransferParams()
    if args.quick:
        scratch_params["max_epochs"] = 2
        params = SharderTransferParams(clusters_per_shard=(4, 2), min_key_score=(0.15,), pack_slack=(0.03, 0.08))
    default_knobs = {k: scratch_params.get(k, v) for k, v in knobs_of(params.grid()[0]).items()}
    started = time.perf_counter()
    population = [deployment(model, prim, 1000 + i, transactions) for i in range(args.train)]
    held_out_transactions = tuple(int(x) for x in (args.held_out_transactions or args.transactions).split(","))
    held_out = [deployment(model, prim, 5000 + i, held_out_transactions) for i in range(args.held_out)]
    print(f"drew {len(population)} + {len(held_out)} deployments in {time.perf_counter() - started:.0f}s", flush=True)

    t = time.perf_counter()
    state = model.fit([(d["train"], d["descriptor"]) for d in population], params)
    fit_seconds = time.perf_counter() - t
    print(f"fitted the transfer model on {len(population)} deployments ({len(state.grid)} knob settings each) in "
          f"{fit_seconds:.0f}s; leave-one-out regret {state.train_loss:.3f}", flush=True)

    member_points = state.standardise(state.descriptors)
    rows, decode_seconds, scratch_seconds = [], [], []
    for i, d in enumerate(held_out):
        fresh = lambda: Path(tempfile.mkdtemp(prefix="aiprim-sharder-transfer-"))  # noqa: E731
        t = time.perf_counter()
        candidates = {"scratch": prim.train_runtime(d["train"], scratch_params, fresh(), seed=0)}
        scratch_seconds.append(time.perf_counter() - t)
        decoded = model.decode(state, d["descriptor"], d["train"], fresh())
        decode_seconds.append(decoded.decode_seconds)
        candidates["transfer"] = decoded
        candidates["search@3"] = model.decode(state, d["descriptor"], d["train"], fresh(), steps=3)
        candidates["default"] = model.construct(d["train"], default_knobs, fresh())
        nearest = int(np.argmin(((member_points - state.standardise(d["descriptor"])) ** 2).sum(axis=1)))
        nearest_knobs = knobs_of(state.grid[int(np.argmin(state.regret[nearest]))])
        candidates["nearest"] = model.construct(d["train"], nearest_knobs, fresh())
        other = held_out[(i + 1) % len(held_out)]["descriptor"] if len(held_out) > 1 else population[0]["descriptor"]
        candidates["shuffled"] = model.decode(state, d["descriptor"], d["train"], fresh(), shuffled_from=other)
        report = prim.evaluate(candidates, d["held_out"], {**evaluate, "training_tables": d["train"], "disruption_trials": 1})
        best_peer, peer = report.best_baseline()
        metric = {name: m[METRIC] for name, m in report.candidates.items()}
        row = {"seed": d["seed"], "workload": workload_of(d), "rows": d["rows"], "shards": d["shards"],
               "transactions": d["transactions"], "peer": peer, "peer_name": best_peer, METRIC: metric,
               "peak_to_mean_load": {name: m["peak_to_mean_load"] for name, m in report.candidates.items()},
               "G": {name: gain(peer, value, metric["scratch"]) for name, value in metric.items() if name != "scratch"},
               "knobs": {"transfer": decoded.knobs, "search@3": candidates["search@3"].knobs, "default": default_knobs,
                         "nearest": nearest_knobs, "shuffled": candidates["shuffled"].knobs},
               "scratch_seconds": scratch_seconds[-1], "decode_seconds": decoded.decode_seconds}
        rows.append(row)
        print(f"[{i + 1}/{len(held_out)}] {row['workload']} {d['rows']} rows, {d['shards']} shards: peer {best_peer} "
              f"{peer:.4f} scratch {metric['scratch']:.4f} ({scratch_seconds[-1]:.0f}s) transfer {metric['transfer']:.4f} "
              f"({decoded.decode_seconds:.1f}s, {decoded.knobs}) default {metric['default']:.4f} "
              f"nearest {metric['nearest']:.4f} shuffled {metric['shuffled']:.4f}", flush=True)

    guardrail = float(config["evaluate"].get("max_peak_to_mean_load", 1.25))
    summary = {}
    for method in ["scratch", *rows[0]["G"]]:
        gains = [r["G"][method] for r in rows if method in r["G"] and r["G"][method] is not None]
        summary[method] = {"median_G": float(np.median(gains)) if gains else None, "deployments_with_G": len(gains),
                           f"median_{METRIC}": float(np.median([r[METRIC][method] for r in rows])),
                           # Better conditioned than G where the peer and scratch are close (kv: both ~ hashing).
                           "median_ratio_to_scratch": float(np.median([r[METRIC][method] / max(r[METRIC]["scratch"], 1e-9)
                                                                       for r in rows])),
                           "worse_than_peer": float(np.mean([r[METRIC][method] > r["peer"] for r in rows])),
                           "over_load_guardrail": float(np.mean([r["peak_to_mean_load"][method] > guardrail for r in rows]))}
    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, 1 core pinned",
        "command": "python benchmarks/sharder_transfer.py" + " ".join([""] + sys.argv[1:]),
        "population": len(population), "held_out": len(held_out), "transactions": list(transactions), "held_out_transactions": list(held_out_transactions),
        "grid": [knobs_of(s) for s in state.grid], "bandwidth": state.bandwidth, "loo_regret": state.train_loss,
        "fit_seconds": fit_seconds, "scratch_seconds_median": float(np.median(scratch_seconds)),
        "decode_seconds_median": float(np.median(decode_seconds)), "decode_seconds_max": float(np.max(decode_seconds)),
        "population_workloads": [workload_of(d) for d in population],
        "summary": summary, "rows": rows, "total_seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    lines = ["| held-out deployment | best peer | scratch | transfer | search@3 | default | nearest | shuffled |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        cells = " | ".join(f"{r[METRIC][m]:.4f}" for m in ("scratch", "transfer", "search@3", "default", "nearest", "shuffled"))
        lines.append(f"| {r['seed']} {r['workload']} ({r['rows']:,} rows, {r['shards']} shards) | "
                     f"{r['peer_name']} {r['peer']:.4f} | {cells} |")
    lines += ["", f"| method | median G | deployments with G | median {METRIC} | median ratio to scratch | "
              f"worse than the best peer | peak/mean load over {guardrail:g} |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for method, s in summary.items():
        g = f"{s['median_G']:.2f}" if s["median_G"] is not None else "(1)" if method == "scratch" else "-"
        lines.append(f"| {method} | {g} | {s['deployments_with_G']} | {s[f'median_{METRIC}']:.4f} | "
                     f"{s['median_ratio_to_scratch']:.3f} | {s['worse_than_peer']:.0%} | {s['over_load_guardrail']:.0%} |")
    text = "\n".join(lines)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    print(f"fit {fit_seconds:.0f}s; decode: median {result['decode_seconds_median']:.2f}s, max "
          f"{result['decode_seconds_max']:.2f}s; scratch: median {result['scratch_seconds_median']:.0f}s (one core); "
          f"total {result['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
