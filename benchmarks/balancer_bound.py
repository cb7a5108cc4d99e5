"""Benchmark: how near the LP lower bound can any routing of a held-out batch get? (issue 13: "the balancer
trained from scratch and the transferred one each within 1.25x of the snapshot's peak_to_mean_lower_bound")

``peak_to_mean_lower_bound`` is a relaxation: it splits every unit (a key, an affinity group, a replica)
fractionally over its eligible servers, and adds only that a unit's own demand must fit on one server.
The best whole-unit routing of a batch lies between that bound and any whole-unit routing of it. This
script builds one: an offline packing of the held-out batch itself, knowing every unit's demand (no router
knows it ahead of time), largest unit first onto the eligible server where it raises the peak least,
replicas of one anti-affinity group on distinct servers (zones are not checked), then moves off the peak
server while they lower it. So packing / bound is the most that whole units can cost; a router further
from the bound than that loses the rest to routing.

Two more references say where that rest comes from: the training part packed the same way and replayed on
the held-out batch (perfect memory of the past, unseen units by weighted rendezvous), and an online
least-loaded router (load state, no knowledge of the future).

The deployments are those of ``benchmarks/transfer.py`` (seeds 5000 on, the same draw); ``--compare`` reads a
transfer result (``benchmarks/results/transfer_full.json``) and puts its routers' ratios beside, deployment
by deployment. Pinned to one core.

    .venv/bin/python benchmarks/balancer_bound.py --held-out 20 --servers 8,120 --max-requests 60000 \\
        --compare benchmarks/results/transfer_full.json
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


def offline_packing(requests, servers) -> np.ndarray:
    """Server id per request: the batch packed knowing every unit's demand (see the module's docstring)."""
    from aiprim.primitives.balancer._fleet import Fleet, Units
    from aiprim.primitives.balancer._routing import route_requests

    units, fleet = Units.from_frame(requests), Fleet.from_frame(servers)
    return route_requests(units, fleet, pack_units(units, fleet))


def packing_of_the_past(training_requests, requests, servers) -> np.ndarray:
    """Server id per request: the training part packed as above, its table applied to the batch; units the
    training part never saw go by capacity-weighted rendezvous. What a router that memorises the past
    perfectly, and knows nothing else, would do."""
    from aiprim.primitives.balancer._fleet import Fleet, Units
    from aiprim.primitives.balancer._peers import WeightedRendezvousRouter
    from aiprim.primitives.balancer._routing import route_requests

    fleet = Fleet.from_frame(servers)
    past = Units.from_frame(training_requests)
    table = dict(zip(zip(past.unit_kind, past.unit_value, past.replica), pack_units(past, fleet)))
    units = Units.from_frame(requests)
    choice = WeightedRendezvousRouter().route_units(units, fleet)
    for u, name in enumerate(zip(units.unit_kind, units.unit_value, units.replica)):
        choice[u] = table.get(name, choice[u])
    return route_requests(units, fleet, choice)


def least_loaded_online(requests, servers) -> np.ndarray:
    """Server id per request: requests in time order; a unit's first request goes to the eligible server with the
    lowest peak load so far (another replica's server avoided), and the unit's later requests follow it. A
    router that keeps load state and knows nothing of the future."""
    from aiprim.primitives.balancer._fleet import Fleet, Units
    from aiprim.primitives.balancer._peers import eligibility_pools
    from aiprim.primitives.balancer._routing import route_requests

    units, fleet = Units.from_frame(requests), Fleet.from_frame(servers)
    cost = requests[["cost_cpu", "cost_mem", "cost_io"]].to_numpy(dtype=np.float64)
    active = cost.sum(axis=0) > 0
    cost, capacity = cost[:, active], fleet.capacity[:, active]
    pool_code, pools = eligibility_pools(units, fleet)
    load = np.zeros_like(capacity)
    choice = np.full(len(units), -1, dtype=np.int64)
    taken: dict[int, set[int]] = {}
    for r in np.argsort(requests["ts"].to_numpy(dtype=np.float64), kind="stable"):
        u = units.request_unit[r]
        if choice[u] < 0:
            group = int(units.anti_group[u])
            eligible = apart_from_replicas(pools[pool_code[u]], taken, group)
            choice[u] = eligible[np.argmin((load[eligible] / capacity[eligible]).max(axis=1))]
            if group >= 0:
                taken.setdefault(group, set()).add(int(choice[u]))
        load[choice[u]] += cost[r]
    return route_requests(units, fleet, choice)


def apart_from_replicas(eligible: np.ndarray, taken: dict[int, set[int]], group: int) -> np.ndarray:
    """The eligible servers holding no replica of anti-affinity group ``group`` (-1: none); all of them where
    every one holds one."""
    if group < 0 or not taken.get(group):
        return eligible
    free = eligible[~np.isin(eligible, list(taken[group]))]
    return free if len(free) else eligible


def pack_units(units, fleet, max_moves: int = 5000) -> np.ndarray:
    """Server index per unit (see the module's docstring)."""
    from aiprim.primitives.balancer._peers import eligibility_pools

    total_demand = units.demand.sum(axis=0)
    active = total_demand > 0
    # Scaled as the bound scales them: total demand = total capacity = 1 per resource, so a server's
    # peak_to_mean is its largest load / capacity.
    a = units.demand[:, active] / total_demand[active]
    c = fleet.capacity[:, active] / fleet.capacity[:, active].sum(axis=0)
    pool_code, pools = eligibility_pools(units, fleet)
    load = np.zeros_like(c)
    choice = np.full(len(a), -1, dtype=np.int64)
    taken: dict[int, set[int]] = {}  # anti-affinity group -> servers holding one of its replicas
    for u in np.argsort(-(a / c.max(axis=0)).max(axis=1), kind="stable"):
        group = int(units.anti_group[u])
        eligible = apart_from_replicas(pools[pool_code[u]], taken, group)
        peak = ((load[eligible] + a[u]) / c[eligible]).max(axis=1)
        server = int(eligible[np.argmin(peak)])
        choice[u] = server
        load[server] += a[u]
        if group >= 0:
            taken.setdefault(group, set()).add(server)
    for _ in range(max_moves):  # move a unit off the peak server where that lowers the peak of both
        ratio = (load / c).max(axis=1)
        hot = int(np.argmax(ratio))
        moved = False
        for u in np.flatnonzero(choice == hot)[np.argsort(-a[choice == hot].sum(axis=1), kind="stable")]:
            eligible = pools[pool_code[u]]
            group = int(units.anti_group[u])
            if group >= 0:
                eligible = eligible[~np.isin(eligible, list(taken[group]))]
            eligible = eligible[eligible != hot]
            if not len(eligible):
                continue
            after = ((load[eligible] + a[u]) / c[eligible]).max(axis=1)
            best = int(np.argmin(after))
            if after[best] < ratio[hot] - 1e-12 and ((load[hot] - a[u]) / c[hot]).max() < ratio[hot] - 1e-12:
                target = int(eligible[best])
                load[hot] -= a[u]
                load[target] += a[u]
                choice[u] = target
                if group >= 0:
                    taken[group].discard(hot)
                    taken[group].add(target)
                moved = True
                break
        if not moved:
            break
    return choice


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held-out", type=int, default=20)
    parser.add_argument("--servers", default="8,120", help="fleet sizes, log-uniform: LO,HI (as benchmarks/transfer.py)")
    parser.add_argument("--requests-per-server", type=int, default=800)
    parser.add_argument("--max-requests", type=int, default=60_000)
    parser.add_argument("--compare", help="a benchmarks/transfer.py result (.json) drawn with the same settings")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "balancer_bound"))
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from aiprim import primitives
    from aiprim.primitives.balancer._metrics import peak_to_mean, peak_to_mean_lower_bound, violation_rates

    prim = primitives.get("balancer")
    bt = prim.transfer_model()
    lo, hi = (int(x) for x in args.servers.split(","))
    compared = {}
    if args.compare:
        compared = {r["seed"]: r for r in json.loads(Path(args.compare).read_text())["rows"]}
    rows, started = [], time.perf_counter()
    for seed in range(5000, 5000 + args.held_out):
        tables = bt.draw_deployment(seed, servers=(lo, hi), requests_per_server=args.requests_per_server,
                                    max_requests=args.max_requests)
        train, held_out = prim.split(tables, 0.2)
        requests, servers = held_out["requests"], held_out["servers"]
        t = time.perf_counter()
        packed = offline_packing(requests, servers)
        seconds = time.perf_counter() - t
        bound = peak_to_mean_lower_bound(requests, servers)
        row = {"seed": seed, "servers": len(servers), "requests": len(requests), "bound": bound,
               "packing": peak_to_mean(requests, servers, packed), "packing_seconds": seconds,
               "packing_violations": violation_rates(requests, servers, packed),
               "past_packing": peak_to_mean(requests, servers, packing_of_the_past(train["requests"], requests, servers)),
               "least_loaded": peak_to_mean(requests, servers, least_loaded_online(requests, servers))}
        other = compared.get(seed)
        if other is not None:
            if other["servers"] != row["servers"] or abs(other["lower_bound"] - bound) > 1e-6 * bound:
                raise SystemExit(f"--compare {args.compare}: deployment {seed} differs from this draw "
                                 f"({other['servers']} servers, bound {other['lower_bound']:.4f} vs {row['servers']}, {bound:.4f})")
            row["compared"] = {name: other["peak_to_mean"][name] for name in ("scratch", "transfer") if name in other["peak_to_mean"]}
            row["compared"]["best peer"] = other["peer"]
        rows.append(row)
        print(f"{seed}: {row['servers']} servers, {row['requests']} requests: bound {bound:.3f}, offline packing "
              f"{row['packing']:.3f} ({row['packing'] / bound:.2f}x, {seconds:.1f}s), the past's packing "
              f"{row['past_packing'] / bound:.2f}x, online least-loaded {row['least_loaded'] / bound:.2f}x"
              + "".join(f", {k} {v / bound:.2f}x" for k, v in row.get("compared", {}).items()), flush=True)

    def ratios(name):
        chosen = [r for r in rows if name in r or name in r.get("compared", {})]
        return np.array([r[name] if name in r else r["compared"][name] for r in chosen]) / np.array([r["bound"] for r in chosen])

    names = ["packing", "past_packing", "least_loaded"] + (["scratch", "transfer", "best peer"] if compared else [])
    lines = ["| routing of the held-out batch | median / bound | max / bound | within 1.25x of the bound |",
             "| --- | ---: | ---: | ---: |"]
    summary = {}
    for name in names:
        r = ratios(name)
        summary[name] = {"median_ratio": float(np.median(r)), "max_ratio": float(r.max()), "within_1_25": float(np.mean(r <= 1.25))}
        label = {"packing": "offline packing (knows the batch)",
                 "past_packing": "the training part's packing (unseen units by weighted rendezvous)",
                 "least_loaded": "online least-loaded, sticky per unit (load state, no future)"}.get(name, name)
        lines.append(f"| {label} | {np.median(r):.2f} | {r.max():.2f} | {np.mean(r <= 1.25):.0%} |")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"machine": f"{platform.machine()} {os.cpu_count()} cores, pinned to one core",
         "command": "python benchmarks/balancer_bound.py " + " ".join(sys.argv[1:]), "summary": summary, "rows": rows,
         "seconds": time.perf_counter() - started}, indent=2, default=float) + "\n")
    out.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
