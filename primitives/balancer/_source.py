"""The embedded telemetry source: a generated fleet and request log.

The default is built to be hard for classical hashing and realistic for a
shared service: a heterogeneous fleet whose per-resource capacities are not
proportional, tenants with different mixes of cpu-, memory- and io-heavy
request classes, skewed key popularity, class requirements, affinity and
anti-affinity groups, and feedback (``server_id``, ``latency_ms``) from a
queueing model of where a capacity-weighted rendezvous router sent each
request.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._fleet import CAPACITY_COLUMNS, COST_COLUMNS

# (cpu, mem, io) capacity of a size-1 server of each class.
SERVER_CLASSES = {
    "general": (8.0, 8.0, 4.0),
    "highmem": (6.0, 32.0, 2.0),
    "storage": (4.0, 8.0, 16.0),
    "gpu": (16.0, 16.0, 4.0),
}
# (cpu, mem, io) mean cost of one request of each class, its base latency, and its server requirement.
REQUEST_CLASSES = {
    "compute": ((4.0, 1.0, 0.5), 20.0, None),
    "cache": ((0.4, 4.0, 0.3), 2.0, None),
    "scan": ((0.8, 1.0, 4.0), 30.0, None),
    "web": ((1.0, 1.0, 1.0), 8.0, None),
    "inference": ((6.0, 4.0, 1.0), 40.0, "gpu"),
}

DEFAULTS = {
    "servers": 100,
    "zones": 3,
    "class_mix": {"general": 0.45, "highmem": 0.2, "storage": 0.2, "gpu": 0.15},
    "size_choices": [1.0, 2.0],
    "capacity_jitter": 0.15,
    "requests": 1_000_000,
    "keys": 200_000,
    "zipf_exponent": 0.9,
    "zipf_offset": 1000,
    "tenants": 12,
    "tenant_mix_alpha": 0.7,
    "inference_share": 0.06,
    "affinity_key_share": 0.05,
    "affinity_group_size": 4,
    "anti_affinity_share": 0.03,
    "replicas": 3,
    "cost_sigma": 0.3,
    "duration_s": 3600.0,
    "target_utilisation": 0.6,
    "population_seed": None,  # None: drawn from the snapshot's seed
}


def generate_fleet(cfg: dict, rng: np.random.Generator, prefix: str = "srv") -> pd.DataFrame:
    n = int(cfg["servers"])
    mix = cfg["class_mix"]
    names = list(mix)
    counts = np.floor(np.array([mix[c] for c in names]) / sum(mix.values()) * n).astype(int)
    counts[0] += n - counts.sum()
    server_class = np.repeat(names, counts)
    rng.shuffle(server_class)
    base = np.array([SERVER_CLASSES[c] for c in server_class])
    size = rng.choice(np.asarray(cfg["size_choices"], dtype=float), size=n)
    jitter = rng.lognormal(0.0, float(cfg["capacity_jitter"]), size=(n, 3))
    capacity = base * size[:, None] * jitter
    zones = [f"zone-{chr(ord('a') + i)}" for i in range(int(cfg["zones"]))]
    frame = pd.DataFrame(
        {
            "server_id": [f"{prefix}-{i:04d}" for i in range(n)],
            "server_class": server_class.astype(object),
            "zone": np.array(zones, dtype=object)[np.arange(n) % len(zones)],
        }
    )
    for column, values in zip(CAPACITY_COLUMNS, capacity.T):
        frame[column] = values
    return frame


def generate_requests(cfg: dict, fleet: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    n_req, n_keys, n_tenants = int(cfg["requests"]), int(cfg["keys"]), int(cfg["tenants"])
    classes = [c for c, (_, _, req) in REQUEST_CLASSES.items() if req is None or req in set(fleet["server_class"])]
    plain = [c for c in classes if REQUEST_CLASSES[c][2] is None]
    # Tenants differ in what they ask for: a Dirichlet mix over unconstrained classes,
    # and a fixed share of constrained ones (e.g. inference on gpu servers).
    # The population (tenants' mixes, which key belongs to whom) can have its
    # own seed, so fresh traffic from the same population can be drawn apart
    # from a population never seen.
    population = np.random.default_rng(cfg["population_seed"]) if cfg.get("population_seed") is not None else rng
    mix = population.dirichlet(np.full(len(plain), float(cfg["tenant_mix_alpha"])), size=n_tenants)
    constrained = [c for c in classes if c not in plain]
    share = float(cfg["inference_share"]) if constrained else 0.0
    mix = np.hstack([mix * (1 - share), np.full((n_tenants, len(constrained)), share / max(len(constrained), 1))])
    ordered = plain + constrained

    key_tenant = population.integers(0, n_tenants, size=n_keys)
    key_class = (population.random(n_keys)[:, None] > np.cumsum(mix[key_tenant], axis=1)).sum(axis=1)
    key_class = np.minimum(key_class, len(ordered) - 1)
    popularity = (np.arange(n_keys) + float(cfg["zipf_offset"])) ** -float(cfg["zipf_exponent"])
    popularity = population.permutation(popularity)
    popularity /= popularity.sum()
    key_of_request = rng.choice(n_keys, size=n_req, p=popularity)

    # Affinity: a share of keys in groups of a few keys of one tenant;
    # anti-affinity: a share of requests belong to replicated groups.
    affinity_group = np.full(n_keys, None, dtype=object)
    n_aff = int(n_keys * float(cfg["affinity_key_share"])) // int(cfg["affinity_group_size"]) * int(cfg["affinity_group_size"])
    if n_aff:
        members = population.choice(n_keys, size=n_aff, replace=False)
        groups = np.arange(n_aff) // int(cfg["affinity_group_size"])
        key_tenant[members] = key_tenant[members[groups * int(cfg["affinity_group_size"])]]
        key_class[members] = key_class[members[groups * int(cfg["affinity_group_size"])]]
        affinity_group[members] = np.array([f"ag-{g:05d}" for g in groups], dtype=object)

    tenant = key_tenant[key_of_request]
    rclass = key_class[key_of_request]
    keys = np.array([f"key-{k:06d}" for k in range(n_keys)], dtype=object)[key_of_request]
    aff = affinity_group[key_of_request]

    anti = np.full(n_req, None, dtype=object)
    replica = pd.array(np.full(n_req, pd.NA), dtype="Int32")
    anti_rows = np.flatnonzero(rng.random(n_req) < float(cfg["anti_affinity_share"]))
    anti_rows = anti_rows[aff[anti_rows] == None]  # noqa: E711  (element-wise)
    if len(anti_rows):
        n_groups = max(1, len(anti_rows) // (4 * int(cfg["replicas"])))
        group = rng.integers(0, n_groups, size=len(anti_rows))
        rep = rng.integers(0, int(cfg["replicas"]), size=len(anti_rows))
        group_names = np.array([f"rg-{g:05d}" for g in range(n_groups)], dtype=object)
        anti[anti_rows] = group_names[group]
        replica[anti_rows] = rep
        keys[anti_rows] = np.char.add(np.char.add(group_names[group].astype(str), "/r"), rep.astype(str)).astype(object)
        # a replicated group is one service: one tenant, one class
        group_key = rng.integers(0, n_keys, size=n_groups)
        tenant[anti_rows] = key_tenant[group_key][group]
        rclass[anti_rows] = key_class[group_key][group]

    class_names = np.array(ordered, dtype=object)[rclass]
    mean_cost = np.array([REQUEST_CLASSES[c][0] for c in ordered])[rclass]
    costs = mean_cost * rng.lognormal(-0.5 * float(cfg["cost_sigma"]) ** 2, float(cfg["cost_sigma"]), size=(n_req, 3))
    requires = np.array([REQUEST_CLASSES[c][2] for c in ordered], dtype=object)[rclass]
    frame = pd.DataFrame(
        {
            "ts": np.sort(rng.uniform(0.0, float(cfg["duration_s"]), size=n_req)),
            "key": keys,
            "tenant": np.array([f"tenant-{t:02d}" for t in range(n_tenants)], dtype=object)[tenant],
            "request_class": class_names,
            "requires_class": requires,
            "affinity_group": aff,
            "anti_affinity_group": anti,
            "replica": replica,
        }
    )
    for column, values in zip(COST_COLUMNS, costs.T):
        frame[column] = values
    return frame


def add_feedback(requests: pd.DataFrame, fleet: pd.DataFrame, cfg: dict, rng: np.random.Generator) -> pd.DataFrame:
    """Where a classical router sent each request, and the latency an M/M/1 queue would give it."""
    from ._peers import WeightedRendezvousRouter

    server_ids = WeightedRendezvousRouter().route(requests, fleet)
    index = pd.Index(fleet["server_id"]).get_indexer(server_ids)
    capacity = fleet[list(CAPACITY_COLUMNS)].to_numpy()
    costs = requests[list(COST_COLUMNS)].to_numpy()
    load = np.zeros_like(capacity)
    for d in range(3):
        load[:, d] = np.bincount(index, weights=costs[:, d], minlength=len(fleet))
    ideal = costs.sum(axis=0) / capacity.sum(axis=0)
    # The fleet as a whole runs at the target utilisation; a server's
    # bottleneck resource sets its queueing delay.
    rho = np.minimum(float(cfg["target_utilisation"]) * (load / capacity / ideal).max(axis=1), 0.97)
    base = requests["request_class"].map({c: v[1] for c, v in REQUEST_CLASSES.items()}).fillna(10.0).to_numpy()
    latency = base / (1.0 - rho[index]) * rng.lognormal(0.0, 0.25, size=len(requests))
    out = requests.copy()
    out["server_id"] = server_ids.astype(object)
    out["latency_ms"] = latency
    return out


def generate(cfg: dict, seed: int) -> dict[str, pd.DataFrame]:
    cfg = {**DEFAULTS, **(cfg or {})}
    rng = np.random.default_rng(seed)
    # With a population seed the fleet is the deployment's too: a new round is new traffic on the same
    # servers, not a fleet whose every server changed class and size (which no pinned hot key survives).
    fleet_rng = np.random.default_rng([int(cfg["population_seed"]), 1]) if cfg.get("population_seed") is not None else rng
    fleet = generate_fleet(cfg, fleet_rng)
    requests = generate_requests(cfg, fleet, rng)
    return {"servers": fleet, "requests": add_feedback(requests, fleet, cfg, rng)}
