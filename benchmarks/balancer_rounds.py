"""Benchmark: does the balancer get better round after round? (the experience window, DESIGN.md)

Each round draws new traffic for one deployment (the source's ``population_seed``: the same fleet, tenants and
key popularity; seed = round), as `aiprim run --rounds R` does. At every round after the first the balancer
is trained twice on the round's training part: on it ``alone`` (what the pipeline trained on before stop 31),
and on the ``window`` of up to 5 rounds joined by ``Balancer.merge_experience`` (what it trains on now, with a
hot-unit table per round of the window). The LP-weighted peer is fitted on the same tables as the model beside
it. All are scored on the round's held-out newest 20%, ``peak_to_mean`` the median of 5 draws of the hash.
Pinned to one core.

    .venv/bin/python benchmarks/balancer_rounds.py                  # the small profile's scale and make run's
    .venv/bin/python benchmarks/balancer_rounds.py --scales small

Writes benchmarks/results/balancer_rounds.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WINDOW = 5  # configs/pipeline.yaml's experience.rounds
SCALES = {  # source and training of configs/pipeline.yaml's small profile, and a 100-server fleet at a fifth of make run's traffic
    "small": ({"servers": 24, "requests": 40000, "keys": 8000, "zipf_offset": 200},
              {"max_epochs": 6, "scenarios_per_epoch": 16, "hot_units": 1000}),
    "100 servers": ({"servers": 100, "requests": 200000, "keys": 60000, "zipf_offset": 1000},
                    {"max_epochs": 6, "scenarios_per_epoch": 16, "hot_units": 3000}),
}


def score(prim, tables: dict, held_out: dict, params: dict) -> dict:
    from aiprim.primitives.balancer._metrics import peak_to_mean_draws
    from aiprim.primitives.balancer._peers import build_peer

    with tempfile.TemporaryDirectory(prefix="aiprim-balancer-rounds-") as tmp:
        runtime = prim.train_runtime(tables, params, Path(tmp), 0)
    requests, servers = held_out["requests"], held_out["servers"]
    learned = peak_to_mean_draws(runtime, requests, servers, 5)
    peer = peak_to_mean_draws(build_peer("lp_weighted_rendezvous", tables), requests, servers, 5)
    return {"learned": statistics.median(learned), "peer": statistics.median(peer)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default=",".join(SCALES), help=f"comma-separated, of: {', '.join(SCALES)}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--population-seed", type=int, default=7)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "balancer_rounds"))
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    import torch

    torch.set_num_threads(1)
    from aiprim import primitives
    from aiprim.primitives.balancer._source import DEFAULTS, generate

    prim = primitives.get("balancer")
    started = time.perf_counter()
    rows = []
    for scale in args.scales.split(","):
        source, params = SCALES[scale]
        source = {**DEFAULTS, **source, "population_seed": args.population_seed}
        parts = []
        for round_number in range(args.rounds):
            train, held_out = prim.split(generate(source, seed=round_number), 0.2)
            parts.append((f"round{round_number:04d}", train))
            if round_number == 0:
                continue
            window = parts[-WINDOW:]
            alone = score(prim, train, held_out, params)
            joined = score(prim, prim.merge_experience(window), held_out, params)
            row = {"scale": scale, "round": round_number, "window": len(window), "alone": alone, "window_scores": joined}
            rows.append(row)
            print(f"{scale} round {round_number} (window {len(window)}): alone {alone['learned']:.3f} "
                  f"(peer {alone['peer']:.3f}), window {joined['learned']:.3f} (peer {joined['peer']:.3f})", flush=True)
    ratios = [r["window_scores"]["learned"] / r["alone"]["learned"] for r in rows]
    summary = {"window_better": sum(x < 0.995 for x in ratios), "window_worse": sum(x > 1.005 for x in ratios),
               "rounds": len(ratios), "geometric_mean_ratio": statistics.geometric_mean(ratios)}
    result = {"machine": f"{platform.node() and 'vm'} {platform.machine()}, 1 core pinned",
              "command": "python benchmarks/balancer_rounds.py " + f"--scales {args.scales} --rounds {args.rounds}",
              "rows": rows, "summary": summary, "seconds": time.perf_counter() - started}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| scale | round | window | alone: learned / LP-weighted peer | window: learned / LP-weighted peer | window / alone |",
             "| --- | ---: | ---: | --- | --- | ---: |"]
    for r, ratio in zip(rows, ratios):
        a, w = r["alone"], r["window_scores"]
        lines.append(f"| {r['scale']} | {r['round']} | {r['window']} | {a['learned']:.3f} / {a['peer']:.3f} | "
                     f"{w['learned']:.3f} / {w['peer']:.3f} | {ratio:.3f} |")
    lines.append(f"\nwindow better on {summary['window_better']} of {summary['rounds']} rounds, worse on "
                 f"{summary['window_worse']} (within 0.5%: a tie); geometric mean {summary['geometric_mean_ratio']:.3f}")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
