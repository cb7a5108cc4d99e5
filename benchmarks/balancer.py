"""Benchmark: the learned balancer beside every classical peer, one run, same data.

For each fleet the model is trained on one snapshot (the pipeline's training
config) and scored on *fresh* traffic it never saw (same fleet and tenant
population, new requests); the "unseen" case scores the default model on a
fleet with another class mix and capacities, and tenants with other request
mixes. Everything runs pinned to one CPU core, so ``lookups_per_s`` is a
one-core number. Results go to benchmarks/results/balancer.json and a
markdown table on stdout (pasted into RESULTS.md).

    .venv/bin/python benchmarks/balancer.py              # all fleets (~15 min on 2 cores)
    .venv/bin/python benchmarks/balancer.py --quick      # smaller, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


KEYS = ("peak_to_mean", "peak_to_mean_lower_bound", "affinity_violation_rate", "anti_affinity_violation_rate",
        "class_violation_rate", "disruption_ratio_remove", "disruption_ratio_add", "lookups_per_s")


def fleets(base: dict, quick: bool) -> dict[str, dict]:
    scale = {"requests": 100_000, "keys": 30_000} if quick else {}
    return {
        "default (100 servers, heterogeneous)": {**base, **scale},
        "homogeneous (100 general servers)": {**base, **scale, "class_mix": {"general": 1.0}, "size_choices": [1.0], "capacity_jitter": 0.0},
        "8x heterogeneous (sizes 1-8)": {**base, **scale, "size_choices": [1.0, 2.0, 4.0, 8.0]},
        "1000 servers": {**base, **scale, "servers": 1000},
    }


def make_data(source: dict, fleet_seed: int, request_seed: int, population_seed: int = 1):
    from aiprim.primitives.balancer import _source

    cfg = {**_source.DEFAULTS, **source, "population_seed": population_seed}
    fleet = _source.generate_fleet(cfg, np.random.default_rng(fleet_seed))
    requests = _source.generate_requests(cfg, fleet, np.random.default_rng(request_seed))
    return {"servers": fleet, "requests": requests}


def train(prim, tables, params: dict, seed: int = 0):
    import tempfile

    with tempfile.TemporaryDirectory(prefix="aiprim-bench-") as tmp:  # checkpoints only; the runtime lives in memory
        return prim.train_runtime(tables, params, Path(tmp), seed)


def score(prim, runtime, tables, trials: int, realisations: int, training: dict) -> dict:
    """Every metric once, and ``peak_to_mean`` over several hash realisations (median, min, max).

    One placement is one draw of the hash: the peak of 300 (server, resource)
    cells moves by several percent from draw to draw. A realisation renames
    every server (``id~k``), which redraws every (unit, server) hash for every
    router alike; the learned runtime's hot-unit table is renamed with them. The peers that learn
    (LP-weighted rendezvous) fit once on ``training``: their weights follow server types, not names.
    """
    from aiprim.primitives.balancer._metrics import peak_to_mean
    from aiprim.primitives.balancer._peers import PEERS, build_peer

    # One draw here (the servers' own names): the realisations below are this table's draws.
    report = prim.evaluate(runtime, tables, {"disruption_trials": trials, "training_tables": training, "hash_draws": 1})
    rows = {"learned": report["metrics"], **report["baselines"]}
    rows["learned"]["expected_peak_to_mean"] = runtime.expected_peak_to_mean(tables["requests"], tables["servers"])
    routers = {"learned": runtime, **{name: build_peer(name, training) for name in PEERS}}
    draws = {name: [] for name in routers}
    for k in range(realisations):
        servers = tables["servers"].assign(server_id=tables["servers"]["server_id"] + f"~{k}")
        routers["learned"] = runtime.renamed_servers(f"~{k}")
        for name, router in routers.items():
            draws[name].append(peak_to_mean(tables["requests"], servers, router.route(tables["requests"], servers)))
    for name, values in draws.items():
        rows[name]["peak_to_mean_draws"] = values
        rows[name]["peak_to_mean_median"] = float(np.median(values))
    return rows


def table(name: str, rows: dict) -> str:
    med = lambda m: m["peak_to_mean_median"]  # noqa: E731
    best_peer = min((med(m), n) for n, m in rows.items() if n != "learned")
    learned = rows["learned"]
    n = len(learned["peak_to_mean_draws"])
    lines = [
        f"#### {name}",
        "",
        f"lower bound {learned['peak_to_mean_lower_bound']:.3f}; learned policy before hashing (expected) "
        f"{learned['expected_peak_to_mean']:.3f}; medians over {n} hash draws: learned / best peer ({best_peer[1]}) = "
        f"{med(learned) / best_peer[0]:.2f}x, learned / lower bound = {med(learned) / learned['peak_to_mean_lower_bound']:.2f}x",
        "",
        f"| router | peak_to_mean, median of {n} draws [min-max] | affinity viol. | anti-affinity viol. | class viol. | disruption remove | disruption add | lookups/s (1 core) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for router, m in rows.items():
        draws = m["peak_to_mean_draws"]
        lines.append(
            f"| {router} | {med(m):.3f} [{min(draws):.3f}-{max(draws):.3f}] | {m['affinity_violation_rate']:.3f} | "
            f"{m['anti_affinity_violation_rate']:.3f} | {m['class_violation_rate']:.3f} | {m['disruption_ratio_remove']:.3f} | "
            f"{m['disruption_ratio_add']:.3f} | {m['lookups_per_s']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="substring of one fleet's name")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "balancer.json"))
    args = parser.parse_args()
    from aiprim._console import setup_logging

    setup_logging()  # aiprim's one logging setup: step lines, known library noise filtered by category
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import torch
    import yaml

    torch.set_num_threads(1)
    from aiprim import primitives

    prim = primitives.get("balancer")
    config = yaml.safe_load((REPO / "configs" / "balancer.yaml").read_text())
    source = {k: v for k, v in config["source"].items() if k != "seed"}
    params = config["train"]
    results = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, 1 core pinned",
               "command": "python benchmarks/balancer.py" + (" --quick" if args.quick else ""), "fleets": {}}
    markdown = []
    default_runtime = None
    for name, fleet_cfg in fleets(source, args.quick).items():
        if args.only and args.only not in name:
            continue
        started = time.perf_counter()
        train_tables = make_data(fleet_cfg, fleet_seed=0, request_seed=100)
        runtime = train(prim, train_tables, params)
        fresh = make_data(fleet_cfg, fleet_seed=0, request_seed=200)  # same fleet and tenants, traffic never seen
        big = fleet_cfg.get("servers", 100) >= 1000
        trials, realisations = (3, 3) if big else (5, 5)
        rows = score(prim, runtime, fresh, trials, realisations, training=train_tables)
        results["fleets"][name] = rows
        markdown.append(table(f"{name}: {len(fresh['requests']):,} fresh requests", rows))
        print(markdown[-1], f"({time.perf_counter() - started:.0f}s)", flush=True)
        if name.startswith("default"):
            default_runtime = runtime
            unseen_cfg = {**fleet_cfg, "class_mix": {"general": 0.3, "highmem": 0.3, "storage": 0.25, "gpu": 0.15},
                          "capacity_jitter": 0.25, "tenants": 7}
            unseen = make_data(unseen_cfg, fleet_seed=7, request_seed=300, population_seed=9)
            # The learned model is the default fleet's, unchanged; the LP peer fits on this fleet's own earlier
            # traffic, as an operator would run it.
            unseen_training = make_data(unseen_cfg, fleet_seed=7, request_seed=301, population_seed=9)
            rows = score(prim, default_runtime, unseen, trials, realisations, training=unseen_training)
            label = "unseen fleet and request mix (default model, other class mix, jitter 0.25, 7 tenants)"
            results["fleets"][label] = rows
            markdown.append(table(label, rows))
            print(markdown[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    (Path(args.out).with_suffix(".md")).write_text("\n".join(markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
