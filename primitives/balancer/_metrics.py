"""The balancer metrics of TELEMETRY.md, for any router with ``route(requests, servers)``.

Units (key, affinity group, or (anti-affinity group, replica)) are the thing a
router places, so the disruption metrics count units; load and violation
metrics look at requests and groups as routed.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
from ._fleet import Fleet, RoutingError, Units, group_mode, optional_column
from ._lp import solve_split
from ._peers import capacity_weights, eligibility_pools

_LP_GRID = 20  # simplex grid step 1/20 for grouping demand directions in the lower-bound LP
_CHUNK = 8192


def _server_index(fleet: Fleet, assigned_server_ids) -> np.ndarray:
    assigned = np.asarray(assigned_server_ids, dtype=object)
    index = pd.Index(fleet.server_id).get_indexer(assigned)
    if (index < 0).any():
        bad = assigned[index < 0][0]
        raise ValueError(f"assigned server {bad!r} ({int((index < 0).sum())} requests) is not in the fleet")
    return index


def peak_to_mean(requests: pd.DataFrame, servers: pd.DataFrame, assigned_server_ids) -> float:
    """max over servers s and resources d of u(s,d) / u*(d); resources nobody demands are ignored."""
    fleet = Fleet.from_frame(servers)
    index = _server_index(fleet, assigned_server_ids)
    cost = requests[["cost_cpu", "cost_mem", "cost_io"]].to_numpy(dtype=np.float64)
    load = np.stack([np.bincount(index, weights=cost[:, d], minlength=len(fleet)) for d in range(cost.shape[1])], axis=1)
    return load_peak_to_mean(load, fleet.capacity)


def load_peak_to_mean(load: np.ndarray, capacity: np.ndarray) -> float:
    """``peak_to_mean`` of a (servers x resources) load, routed or expected."""
    u_star = load.sum(axis=0) / capacity.sum(axis=0)
    active = u_star > 0
    if not active.any():
        return 1.0
    return float(((load[:, active] / capacity[:, active]) / u_star[active]).max())


def peak_to_mean_lower_bound(requests: pd.DataFrame, servers: pd.DataFrame, grid: int = _LP_GRID) -> float:
    """A lower bound on ``peak_to_mean`` of any router that places each unit whole on an eligible server.

    It is the largest of three valid bounds:

    1. 1.0: u*(d) is the capacity-weighted mean of u(s,d), so the max is >= it.
    2. The fractional LP: minimise t such that every unit's demand is split
       over its eligible servers and load(s,d) <= t * u*(d) * cap(s,d). A
       routing is a feasible (integral) split, so its peak-to-mean is >= the
       LP optimum. To keep the LP small, units are merged into groups by
       (eligible-server set, cell of their demand direction on a 1/grid
       simplex grid). A group's direction v_g is the componentwise *minimum*
       of its members' normalised directions, and member u contributes
       m_u = min_d a_u(d) / v_g(d) >= |a_u|_1 of it, so a_u >= m_u * v_g
       componentwise. Splitting each group like the (m-weighted) mean split
       of its members puts no more load on any (s, d) than the members did:
       every solution of the per-unit LP maps to one of the grouped LP with
       the same t, so the grouped optimum is <= the per-unit one (a
       relaxation). Units with proportional demand merge without loss.
       Servers of one class with proportional capacity vectors are merged too,
       exactly (split a merged server's load in proportion to capacity).
    3. The indivisible-unit bound: a unit goes whole to one server, so the
       result is >= max over units of min over its eligible servers of
       max_d demand(u,d) / (cap(s,d) * u*(d)).

    The LP value reported is not the solver's objective but a dual
    certificate built from its prices pi(s,d) >= 0: for any feasible split,
    sum_g min_{s eligible for g} pi(s).D_g <= sum_{s,d} pi(s,d) load(s,d)
    <= t * sum_{s,d} pi(s,d) cap(s,d), so the ratio of the outer sums is
    <= t for every routing, whatever the solver's tolerances.
    """
    units = Units.from_frame(requests)
    fleet = Fleet.from_frame(servers)
    u_star = units.demand.sum(axis=0) / fleet.capacity.sum(axis=0)
    active = u_star > 0
    if not active.any():
        return 1.0
    # Scale resource d so that total demand = total capacity = 1: then
    # "load <= t * u* * cap" reads "a <= t * c" and all resources weigh alike.
    total_capacity = fleet.capacity[:, active].sum(axis=0)
    a = units.demand[:, active] / (u_star[active] * total_capacity)
    c = fleet.capacity[:, active] / total_capacity
    pool_code, pools = eligibility_pools(units, fleet)

    bound = max(1.0, _lp_bound(a, c, pool_code, pools, fleet.server_class, grid))
    return max(bound, _unit_bound(a, c, pool_code, pools, floor=bound))


def _demand_groups(a, pool_code, grid):
    """(group demand (G, k), pool of each group): the direction-grid relaxation of the per-unit demand."""
    k = a.shape[1]
    size = a.sum(axis=1)
    keep = size > 0
    a, pool_code, size = a[keep], pool_code[keep], size[keep]
    direction = a / size[:, None]
    # A cell is the rounded first k-1 coordinates of the direction (the last is implied).
    cell = np.rint(direction[:, : k - 1] * grid).astype(np.int64)
    group_key = pool_code.copy()
    for d in range(k - 1):
        group_key = group_key * (grid + 1) + cell[:, d]
    group, uniques = pd.factorize(group_key)
    n_groups = len(uniques)
    v = np.stack([pd.Series(direction[:, d]).groupby(group).min().to_numpy() for d in range(k)], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.where(v[group] > 0, a / v[group], np.inf).min(axis=1)
    demand = v * np.bincount(group, weights=m, minlength=n_groups)[:, None]
    group_pool = np.zeros(n_groups, dtype=np.int64)
    group_pool[group] = pool_code
    return demand, group_pool


def _lp_bound(a, c, pool_code, pools, server_class, grid) -> float:
    demand, group_pool = _demand_groups(a, pool_code, grid)
    if not len(demand):
        return 1.0
    split = solve_split(demand, group_pool, c, pools, server_class)
    # Report the dual certificate, not the solver's objective: valid whatever the tolerances.
    denominator = float((split.price * split.capacity).sum())
    if denominator <= 0:
        return 1.0
    priced_load = np.where(split.eligible, split.demand @ split.price.T, np.inf)  # (G, T): price of all of g on type t
    return float(priced_load.min(axis=1).sum()) / denominator


def _unit_bound(a, c, pool_code, pools, floor: float) -> float:
    best = floor
    for p, eligible in enumerate(pools):
        idx = np.flatnonzero(pool_code == p)
        if not len(idx):
            continue
        cap = np.unique(c[eligible], axis=0)  # the bound only needs distinct server shapes
        need = a[idx]
        # Cheap bracket per unit: >= vs the largest capacity per resource,
        # <= vs one fixed server; only units whose upper end beats the best
        # lower end (or the LP) need the exact min over servers.
        low = (need / cap.max(axis=0)).max(axis=1)
        best = max(best, float(low.max()))
        high = (need / cap[0]).max(axis=1)
        candidates = need[high > best]
        for start in range(0, len(candidates), _CHUNK):
            block = candidates[start : start + _CHUNK]
            exact = (block[:, None, :] / cap[None, :, :]).max(axis=2).min(axis=1)
            best = max(best, float(exact.max()))
    return best


def violation_rates(requests: pd.DataFrame, servers: pd.DataFrame, assigned_server_ids) -> dict:
    """Fractions of affinity groups, anti-affinity groups and class-constrained requests that break their rule.

    - affinity: a group whose requests land on more than one server.
    - anti-affinity: a group where two distinct replicas share a server while
      at least as many servers are eligible for the group as it has replicas,
      or share a zone while the eligible servers span at least as many zones
      (R = its highest replica + 1, as replicas are numbered 0..R-1, whether
      or not all appear in this batch). Where fewer are eligible (three
      replicas that require a class of two servers) no routing can keep them
      apart, and sharing is not counted. The group's requirement is the
      most frequent ``requires_class`` of its requests.
    - class: among requests with ``requires_class``, those on a server of another class.
    A rate with nothing to measure (no such groups / requests) is 0.0.
    """
    fleet = Fleet.from_frame(servers)
    server = _server_index(fleet, assigned_server_ids)
    zone, _ = fleet.zone_codes()

    n_servers = len(fleet)
    affinity = optional_column(requests, "affinity_group")
    has_affinity = pd.notna(affinity)
    affinity_rate = 0.0
    if has_affinity.any():
        group, uniques = pd.factorize(affinity[has_affinity])
        pairs = np.unique(group.astype(np.int64) * n_servers + server[has_affinity])
        servers_per_group = np.bincount(pairs // n_servers, minlength=len(uniques))
        affinity_rate = float((servers_per_group > 1).mean())

    anti = optional_column(requests, "anti_affinity_group")
    has_anti = pd.notna(anti)
    anti_rate = 0.0
    if has_anti.any():
        group, uniques = pd.factorize(anti[has_anti])
        group = group.astype(np.int64)
        n_groups = len(uniques)
        replica = pd.array(requests["replica"], dtype="Int64").fillna(-1).to_numpy(dtype=np.int64)[has_anti]
        replica_code, replica_uniques = pd.factorize(replica)
        n_replicas = len(replica_uniques)
        replicas_per_group = np.zeros(n_groups, dtype=np.int64)
        np.maximum.at(replicas_per_group, group, replica + 1)

        def shared(place: np.ndarray, n_places: int) -> np.ndarray:
            """Groups where one place (server or zone) holds two distinct replicas."""
            triples = np.unique((group * n_places + place) * n_replicas + replica_code)
            group_place, counts = np.unique(triples // n_replicas, return_counts=True)
            bad = np.zeros(n_groups, dtype=bool)
            bad[group_place[counts > 1] // n_places] = True
            return bad

        requirement = group_mode(optional_column(requests, "requires_class")[has_anti], group, n_groups)
        req_codes, req_uniques = pd.factorize(requirement, use_na_sentinel=False)
        eligible = [np.ones(n_servers, dtype=bool) if (r is None or r != r) else fleet.server_class == r for r in req_uniques]
        servers_available = np.array([int(e.sum()) for e in eligible], dtype=np.int64)[req_codes]
        zones_available = np.array([len(np.unique(zone[e])) for e in eligible], dtype=np.int64)[req_codes]
        on_server = server[has_anti]
        server_bad = shared(on_server, n_servers) & (servers_available >= replicas_per_group)
        zone_bad = shared(zone[on_server], int(zone.max()) + 1) & (zones_available >= replicas_per_group)
        anti_rate = float((server_bad | zone_bad).mean())

    required = optional_column(requests, "requires_class")
    has_requirement = pd.notna(required)
    class_rate = 0.0
    if has_requirement.any():
        class_rate = float((fleet.server_class[server[has_requirement]] != required[has_requirement]).mean())

    return {
        "affinity_violation_rate": affinity_rate,
        "anti_affinity_violation_rate": anti_rate,
        "class_violation_rate": class_rate,
    }


def _unit_servers(units: Units, assigned_server_ids) -> np.ndarray:
    """Server id of each unit, read off its first request (routers place a unit whole)."""
    _, first = np.unique(units.request_unit, return_index=True)
    return np.asarray(assigned_server_ids, dtype=object)[first]


def _routed_units(router, units: Units, requests: pd.DataFrame, servers: pd.DataFrame) -> np.ndarray:
    """Server id per unit. Peers expose ``route_units``: the batch's units are
    then built once for all trials instead of once per ``route`` call."""
    if hasattr(router, "route_units"):
        fleet = Fleet.from_frame(servers)
        return fleet.server_id[router.route_units(units, fleet)]
    return _unit_servers(units, router.route(requests, servers))


def disruption_ratios(router, requests: pd.DataFrame, servers: pd.DataFrame, n_trials: int = 5, seed: int = 0, base=None) -> dict:
    """Units moved by a one-server change of the fleet, over the ideal amount; mean over trials.

    Units are counted by their load: each weighs its demand as a share of the
    batch's total, averaged over resources. A multi-resource balancer gives a
    newcomer the load its capacity calls for, not a fixed count of units (a
    memory-rich server takes many light cache keys), so counting load is
    what makes "ideal 1.0" hold for every router that balances; with
    equal-cost units it is the plain count.

    remove: a random server among those holding units is removed; moved load
    over the load it held (all of it must move, so ideal 1.0).
    add: a copy of a random server under a new id ("added-<k>") joins; moved
    load over the load the newcomer should take in a balanced fleet: its
    capacity share (mean over resources of its capacity over the fleet's).
    Eligibility pools do not change that ideal: when gpu-only requests fill
    part of the gpu servers, a balanced router gives a new general server
    more than its share of the unconstrained load, and exactly its share of
    the total.
    A trial whose fleet the router cannot serve (e.g. it removed the only
    server of a required class) is replaced by another server; NaN if none works.
    ``base`` (optional) is the router's assignment on the unchanged fleet.
    """
    units = Units.from_frame(requests)
    rng = np.random.default_rng(seed)
    before = _routed_units(router, units, requests, servers) if base is None else _unit_servers(units, base)
    load = (units.demand / np.maximum(units.demand.sum(axis=0), 1e-300)).mean(axis=1)

    remove = []
    holders = pd.unique(before)
    for victim in rng.permutation(holders):
        if len(remove) == n_trials:
            break
        try:
            after = _routed_units(router, units, requests, servers[servers["server_id"] != victim])
        except RoutingError:
            continue
        remove.append(load[after != before].sum() / load[before == victim].sum())

    add = []
    ids = set(servers["server_id"].astype(str))
    serial = 0
    for row in rng.permutation(len(servers)):
        if len(add) == n_trials:
            break
        while f"added-{serial}" in ids:
            serial += 1
        newcomer = servers.iloc[[row]].assign(server_id=f"added-{serial}")
        serial += 1
        grown = pd.concat([servers, newcomer], ignore_index=True)
        fleet = Fleet.from_frame(grown)
        weight = capacity_weights(fleet.capacity)
        expected = load.sum() * weight[-1] / weight.sum()
        try:
            after = _routed_units(router, units, requests, grown)
        except RoutingError:
            continue
        add.append(load[after != before].sum() / expected)

    return {
        "disruption_ratio_remove": float(np.mean(remove)) if remove else math.nan,
        "disruption_ratio_add": float(np.mean(add)) if add else math.nan,
    }


def _timed_routes(router, requests, servers, repeats: int):
    times, assigned = [], None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        assigned = router.route(requests, servers)
        times.append(time.perf_counter() - start)
    return len(requests) / float(np.median(times)), assigned


def lookups_per_s(router, requests: pd.DataFrame, servers: pd.DataFrame, repeats: int = 3) -> float:
    """Requests routed per second by one batched ``route`` call (median of ``repeats``)."""
    return _timed_routes(router, requests, servers, repeats)[0]


def evaluate_router(
    router, requests: pd.DataFrame, servers: pd.DataFrame, disruption_trials: int = 5, lookup_repeats: int = 3,
    lower_bound: float | None = None, seed: int = 0, hash_draws: int = 1,
) -> dict:
    """Every TELEMETRY.md balancer metric for one router (``lower_bound`` reuses a precomputed bound).

    ``peak_to_mean`` is the median over ``hash_draws`` draws of the hash (``peak_to_mean_draws``), and
    ``peak_to_mean_worst`` their largest; the other metrics are those of the servers' own names."""
    rate, assigned = _timed_routes(router, requests, servers, lookup_repeats)
    draws = peak_to_mean_draws(router, requests, servers, hash_draws, first=peak_to_mean(requests, servers, assigned))
    out = {
        "peak_to_mean": float(np.median(draws)),
        "peak_to_mean_worst": float(np.max(draws)),
        "peak_to_mean_lower_bound": peak_to_mean_lower_bound(requests, servers) if lower_bound is None else float(lower_bound),
    }
    out.update(violation_rates(requests, servers, assigned))
    out.update(disruption_ratios(router, requests, servers, n_trials=disruption_trials, seed=seed, base=assigned))
    out["lookups_per_s"] = rate
    return out


def peak_to_mean_draws(router, requests: pd.DataFrame, servers: pd.DataFrame, draws: int,
                       first: float | None = None) -> list[float]:
    """``peak_to_mean`` under ``draws`` draws of the hash: the servers' own names, then renamed ``id~k``.

    One placement is one draw: on a small fleet its peak moves by 10% or more between draws (RESULTS.md),
    more than a promotion's margin, while what it says of the next traffic, whose keys hash anew, is the
    policy's typical peak. Renaming every server redraws every (unit, server) hash for every router alike; a
    router that pins units to server names (the learned runtime's hot-unit table) is renamed along
    (``renamed_servers``)."""
    values = [peak_to_mean(requests, servers, router.route(requests, servers)) if first is None else first]
    rename = getattr(router, "renamed_servers", None)
    for k in range(1, max(1, int(draws))):
        suffix = f"~{k}"
        renamed = servers.assign(server_id=servers["server_id"].astype(str) + suffix)
        drawn = rename(suffix) if rename is not None else router
        values.append(peak_to_mean(requests, renamed, drawn.route(requests, renamed)))
    return values


def evaluate_routers(routers: dict, requests: pd.DataFrame, servers: pd.DataFrame, **kwargs) -> dict:
    """``evaluate_router`` for each named router, sharing one lower bound."""
    bound = peak_to_mean_lower_bound(requests, servers)
    return {name: evaluate_router(router, requests, servers, lower_bound=bound, **kwargs) for name, router in routers.items()}
