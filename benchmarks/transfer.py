"""Benchmark: the transfer stage for the balancer (issue 13), zero-shot and few-shot, against its baselines.

Deployments are drawn from the balancer source's family (``_transfer.draw_deployment``: fleet size,
class mix, capacity and cost ratios, skew, groups, zones; class names never generated). A population of
``--train`` deployments is trained from scratch (the pipeline's small-profile training) and fits the
transfer model; each of ``--held-out`` other deployments is then scored on its held-out newest 20% with:

- ``peer``: the best classical peer (the floor), ``scratch``: a balancer trained on its training part (the ceiling);
- ``transfer``: decoded from its descriptor, no training (zero-shot); ``fewshot@N``: after N fine-tuning steps;
- ``nearest``: the population member nearest by descriptor, applied as is (OtterTune's mapping);
- ``default``: a balancer trained on the default fleet, applied as is (today's zero-shot);
- ``shuffled``: decoded with another held-out deployment's descriptor (a leakage control).

G = (peer - method) / (peer - scratch) on peak_to_mean. Pinned to one core. Writes
benchmarks/results/transfer.json and transfer.md.

    .venv/bin/python benchmarks/transfer.py                     # ~10 min on 2 busy cores
    .venv/bin/python benchmarks/transfer.py --train 3 --held-out 2 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def scratch_params(profile: str = "small") -> dict:
    from aiprim.flows import config

    return dict(config.primitive_config(config.load(None if profile == "default" else profile), "balancer").get("train", {}))


def deployment(bt, prim, seed: int, servers, requests_per_server, max_requests) -> dict:
    tables = bt.draw_deployment(seed, servers=servers, requests_per_server=requests_per_server, max_requests=max_requests)
    train, held_out = prim.split(tables, 0.2)
    return {"seed": seed, "servers": len(tables["servers"]), "requests": len(tables["requests"]), "train": train,
            "held_out": held_out, "descriptor": prim.describe_deployment(train)}


def train_scratch(prim, tables, params: dict):
    return prim.train_runtime(tables, params, Path(tempfile.mkdtemp(prefix="aiprim-transfer-")), seed=0)


def gain(peer: float, method: float, scratch: float) -> float | None:
    return (peer - method) / (peer - scratch) if peer - scratch > 1e-9 else None


def main() -> None:
    # Every folder this run makes (trained and decoded runtimes) lands in one that is removed at exit.
    scratch = tempfile.TemporaryDirectory(prefix="aiprim-transfer-")
    tempfile.tempdir = scratch.name
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10, help="population size")
    parser.add_argument("--held-out", type=int, default=8)
    parser.add_argument("--servers", default="8,60", help="fleet sizes, log-uniform: LO,HI")
    parser.add_argument("--held-out-servers", help="fleet sizes of the held-out deployments (default: --servers); "
                        "larger than any trained for the out-of-family case")
    parser.add_argument("--requests-per-server", type=int, default=800)
    parser.add_argument("--max-requests", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=8, help="transfer model epochs over the population")
    parser.add_argument("--few-shot", default="0.01,0.1,1.0", help="fractions of scratch's steps ('' for none)")
    parser.add_argument("--scratch-profile", default="small", help="the profile scratch (and the population members, "
                        "the default champion, the transfer's hot units) train with: small (96 steps) or default "
                        "(configs/balancer.yaml: 3840 steps)")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    parser.add_argument("--kernel-only", action="store_true",
                        help="also decode the kernel alone (no split LP, no hot-unit table), with the true and a "
                             "shuffled descriptor")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "transfer"))
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import torch

    torch.set_num_threads(1)
    from aiprim import primitives
    from aiprim.primitives.balancer._source import generate
    from aiprim.primitives.balancer._transfer import TransferParams

    prim = primitives.get("balancer")
    bt = prim.transfer_model()
    lo, hi = (int(x) for x in args.servers.split(","))
    params = scratch_params(args.scratch_profile)
    if args.quick:
        params.update(max_epochs=2)
    scratch_steps = int(params.get("max_epochs", 6)) * int(params.get("scenarios_per_epoch", 16))
    started = time.perf_counter()
    draw = dict(servers=(lo, hi), requests_per_server=args.requests_per_server, max_requests=args.max_requests)
    population = [deployment(bt, prim, 1000 + i, **draw) for i in range(args.train)]
    held_lo, held_hi = (int(x) for x in (args.held_out_servers or args.servers).split(","))
    held_out = [deployment(bt, prim, 5000 + i, **{**draw, "servers": (held_lo, held_hi)}) for i in range(args.held_out)]
    print(f"drew {len(population)} + {len(held_out)} deployments in {time.perf_counter() - started:.0f}s", flush=True)

    t = time.perf_counter()
    for d in population + held_out:
        d["scratch"] = train_scratch(prim, d["train"], params)
    scratch_seconds = (time.perf_counter() - t) / (len(population) + len(held_out))
    default_tables = generate({"servers": 24, "requests": 30000, "keys": 6000, "zipf_offset": 200}, seed=7)
    default_runtime = train_scratch(prim, prim.split(default_tables, 0.2)[0], params)
    print(f"trained {len(population) + len(held_out) + 1} balancers from scratch, {scratch_seconds:.1f}s each", flush=True)

    t = time.perf_counter()
    transfer_params = TransferParams(epochs=1 if args.quick else args.epochs, hot_units=int(params.get("hot_units", 1000)))
    state = bt.fit([(d["train"], d["descriptor"]) for d in population], transfer_params)
    fit_seconds = time.perf_counter() - t
    print(f"fitted the transfer model on {len(population)} deployments in {fit_seconds:.0f}s", flush=True)

    fractions = [float(x) for x in args.few_shot.split(",") if x.strip()]
    member_points = np.stack([state.standardise(d["descriptor"]) for d in population])
    rows, decode_seconds = [], []
    for i, d in enumerate(held_out):
        candidates = {"scratch": d["scratch"], "default": default_runtime}
        nearest = int(np.argmin(((member_points - state.standardise(d["descriptor"])) ** 2).sum(axis=1)))
        candidates["nearest"] = population[nearest]["scratch"]
        decoded = bt.decode(state, d["descriptor"], d["train"], Path(tempfile.mkdtemp()))
        decode_seconds.append(decoded.decode_seconds)
        candidates["transfer"] = decoded
        other = held_out[(i + 1) % len(held_out)]["descriptor"] if len(held_out) > 1 else population[0]["descriptor"]
        candidates["shuffled"] = bt.decode(state, d["descriptor"], d["train"], Path(tempfile.mkdtemp()), shuffled_from=other)
        if args.kernel_only:
            # The leakage check on the conditioned kernel alone: no split LP and no hot-unit table, which read
            # the deployment's own telemetry whatever the descriptor says and so make up for a wrong embedding.
            bare = replace(state, params=replace(state.params, hot_units=0, lp_split=False))
            candidates["transfer_kernel"] = bt.decode(bare, d["descriptor"], d["train"], Path(tempfile.mkdtemp()))
            candidates["shuffled_kernel"] = bt.decode(bare, d["descriptor"], d["train"], Path(tempfile.mkdtemp()),
                                                      shuffled_from=other)
        for fraction in fractions:
            steps = max(1, int(round(fraction * scratch_steps)))
            candidates[f"fewshot@{steps}"] = bt.decode(state, d["descriptor"], d["train"], Path(tempfile.mkdtemp()), steps=steps)
        report = prim.evaluate(candidates, d["held_out"], {"disruption_trials": 1, "training_tables": d["train"],
                                                            "hash_draws": 1})  # one draw, as its stored results
        best_peer, peer = report.best_baseline()
        metric = {name: m["peak_to_mean"] for name, m in report.candidates.items()}
        row = {"seed": d["seed"], "servers": d["servers"], "requests": d["requests"], "peer": peer, "peer_name": best_peer,
               "lower_bound": report.lower_bounds.get("peak_to_mean"), "peak_to_mean": metric,
               "G": {name: gain(peer, value, metric["scratch"]) for name, value in metric.items() if name != "scratch"},
               "violations": {name: m["class_violation_rate"] + m["affinity_violation_rate"] + m["anti_affinity_violation_rate"]
                              for name, m in report.candidates.items()}}
        rows.append(row)
        print(f"[{i + 1}/{len(held_out)}] {d['servers']} servers: peer {peer:.3f} scratch {metric['scratch']:.3f} "
              f"transfer {metric['transfer']:.3f} nearest {metric['nearest']:.3f} default {metric['default']:.3f} "
              f"bound {row['lower_bound']:.3f}", flush=True)

    methods = [m for m in rows[0]["G"]]
    summary = {}
    for method in methods:
        gains = [r["G"][method] for r in rows if r["G"][method] is not None]
        summary[method] = {"median_G": float(np.median(gains)) if gains else None, "deployments": len(gains),
                           "worse_than_peer": float(np.mean([r["peak_to_mean"][method] > r["peer"] for r in rows])),
                           "median_ratio_to_bound": float(np.median([r["peak_to_mean"][method] / r["lower_bound"] for r in rows]))}
    summary["scratch"] = {"median_ratio_to_bound": float(np.median([r["peak_to_mean"]["scratch"] / r["lower_bound"] for r in rows])),
                          "worse_than_peer": float(np.mean([r["peak_to_mean"]["scratch"] > r["peer"] for r in rows]))}
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}, pinned to one core",
        "command": "python " + " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "population": len(population), "held_out": len(held_out), "servers": [lo, hi], "held_out_servers": [held_lo, held_hi],
        "scratch_steps": scratch_steps, "scratch_seconds_each": scratch_seconds, "fit_seconds": fit_seconds,
        "decode_seconds_median": float(np.median(decode_seconds)), "decode_seconds_max": float(np.max(decode_seconds)),
        "summary": summary, "rows": rows, "total_seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    lines = ["| method | median G | deployments with G | worse than the best peer | median peak_to_mean / bound |",
             "| --- | --- | --- | --- | --- |"]
    for method, s in summary.items():
        g = f"{s['median_G']:.2f}" if s.get("median_G") is not None else "-"
        lines.append(f"| {method} | {g} | {s.get('deployments', '-')} | {s['worse_than_peer']:.0%} | {s['median_ratio_to_bound']:.2f} |")
    text = "\n".join(lines)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    print(f"decode: median {result['decode_seconds_median']:.3f}s, max {result['decode_seconds_max']:.3f}s (one core); "
          f"total {result['total_seconds']:.0f}s")


if __name__ == "__main__":
    main()
