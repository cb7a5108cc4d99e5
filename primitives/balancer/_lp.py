"""The fractional split LP shared by the lower bound and the LP-weighted rendezvous peer.

Groups of demand (a group's demand is one vector over resources) are split
over the servers they may use so that the fleet's peak utilisation t is as
low as it can be:

    minimise t  subject to  sum_g demand[g, d] * y[g, s] <= t * cap[s, d]   for every server s and resource d,
                            sum_s y[g, s] = 1,  y[g, s] >= 0 only where g may use s.

Demand and capacity come scaled so that, per resource, total demand equals
total capacity equals 1 (``scaled``): then t = 1 is a perfectly even fleet.
Servers of one class with proportional capacity vectors are merged into one
type first (exact: a merged type's share splits over its servers in
proportion to their capacity), which keeps the LP small on large fleets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Split:
    """A solved split LP."""

    share: np.ndarray  # (G, S): the share of group g's demand on server s (rows sum to 1)
    price: np.ndarray  # (T, k): the dual price of type t's resource d (>= 0)
    eligible: np.ndarray  # bool (G, T): group g may use type t
    demand: np.ndarray  # (G, k): group demand, in the units the solver saw
    capacity: np.ndarray  # (T, k): type capacity, in the same units


def scaled(demand: np.ndarray, capacity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(demand, capacity, active resources) with per-resource totals of 1; resources nobody demands are dropped."""
    total_demand = demand.sum(axis=0)
    total_capacity = capacity.sum(axis=0)
    active = total_demand > 0
    return demand[:, active] / total_demand[active], capacity[:, active] / total_capacity[active], active


def capacity_shape(capacity: np.ndarray, decimals: int) -> np.ndarray:
    """Each server's capacity vector over its sum, rounded: servers with proportional capacities share one."""
    return np.round(capacity / capacity.sum(axis=1, keepdims=True), decimals)


def type_keys(server_class, shape: np.ndarray) -> pd.MultiIndex:
    """A server's type: its class and the shape of its capacity vector (``capacity_shape``)."""
    return pd.MultiIndex.from_arrays([pd.Series(server_class, dtype=object), *[shape[:, d] for d in range(shape.shape[1])]])


def server_types(c: np.ndarray, server_class) -> tuple[np.ndarray, np.ndarray]:
    """(type of each server, numbered in order of first appearance; capacity per type)."""
    server_type, _ = pd.factorize(type_keys(server_class, capacity_shape(c, 12)))
    capacity = np.zeros((int(server_type.max()) + 1, c.shape[1]))
    np.add.at(capacity, server_type, c)
    return server_type, capacity


def solve_split(demand: np.ndarray, group_pool: np.ndarray, c: np.ndarray, pools: list[np.ndarray], server_class) -> Split:
    """Solve the split LP for groups ``demand`` (G, k), group ``g`` restricted to servers ``pools[group_pool[g]]``,
    on servers of capacity ``c`` (S, k), both scaled (``scaled``)."""
    from scipy import sparse
    from scipy.optimize import linprog

    server_type, capacity = server_types(c, server_class)
    n_groups, k = demand.shape
    n_types = len(capacity)
    # Unit-scale the numbers the solver sees (t and the split are invariant to a common factor).
    demand = demand * n_types
    capacity = capacity * n_types
    eligible = np.zeros((n_groups, n_types), dtype=bool)
    for p, servers_of_pool in enumerate(pools):
        eligible[np.ix_(group_pool == p, np.unique(server_type[servers_of_pool]))] = True

    # Variables: y[g, type] for eligible pairs (the share of group g on the type), then t.
    col_group, col_type = np.nonzero(eligible)
    n_cols = len(col_group)
    cols = np.arange(n_cols)
    # load(type, d) - t * cap(type, d) <= 0, one row per (type, d).
    a_ub = sparse.coo_matrix(
        (
            np.concatenate([demand[col_group].ravel(), -capacity.ravel()]),
            (
                np.concatenate([(col_type[:, None] * k + np.arange(k)).ravel(), np.arange(n_types * k)]),
                np.concatenate([np.repeat(cols, k), np.full(n_types * k, n_cols)]),
            ),
        ),
        shape=(n_types * k, n_cols + 1),
    ).tocsr()
    a_eq = sparse.coo_matrix((np.ones(n_cols), (col_group, cols)), shape=(n_groups, n_cols + 1)).tocsr()
    objective = np.zeros(n_cols + 1)
    objective[-1] = 1.0
    # The LP is highly degenerate (many equally good splits): dual simplex
    # needs ~100x the time of the interior point method here.
    for method in ("highs-ipm", "highs"):
        result = linprog(
            objective, A_ub=a_ub, b_ub=np.zeros(n_types * k), A_eq=a_eq, b_eq=np.ones(n_groups), bounds=(0, None), method=method
        )
        if result.status == 0:
            break
    else:
        raise RuntimeError(f"the split LP failed: {result.message}")
    type_share = np.zeros((n_groups, n_types))
    type_share[col_group, col_type] = np.clip(result.x[:n_cols], 0.0, None)
    type_share /= np.maximum(type_share.sum(axis=1, keepdims=True), 1e-300)
    # A type's share splits over its servers by size (their capacity vectors are proportional).
    size = c.sum(axis=1)
    within = size / np.bincount(server_type, weights=size, minlength=n_types)[server_type]
    price = np.clip(-result.ineqlin.marginals.reshape(n_types, k), 0.0, None)
    return Split(type_share[:, server_type] * within[None, :], price, eligible, demand, capacity)


SHAPE_DECIMALS = 9  # a persisted type's shape: to match a server's, whatever fleet it comes in


class SplitWeights:
    """Routing weights from the split LP: per request group, a weight per unit of capacity of each server type.

    A request group is a (request class, required class) pair. Fitted on a
    batch of units (the training part's): each group's demand over the batch
    is split over the fleet by ``solve_split``. The LP cannot tell apart
    servers of one class whose capacity vectors are proportional, so a
    weight belongs to a server *type*: its class and the shape of its
    capacity vector, never its name. ``logits(fleet)`` gives every group's
    log weight on the servers of any fleet: a server of a type the fit saw
    weighs as that type did per unit of capacity, whatever it is called, so
    removing or renaming servers leaves every other weight unchanged; a
    server of a new type weighs what its class's types (else all types)
    weighed on average. A server the split gave nothing keeps a weight of
    1e-9 of the group's largest, so a group whose servers all left still
    lands on an eligible server.
    """

    def __init__(self, request_class, requires_class, type_class, type_shape, density, capacity_total):
        self.request_class = np.asarray(request_class, dtype=object)
        self.requires_class = np.asarray(requires_class, dtype=object)  # "" for none
        self.type_class = np.asarray(type_class, dtype=object)
        self.type_shape = np.asarray(type_shape, dtype=np.float64)  # (T, k): capacity / its sum, rounded
        self.density = np.asarray(density, dtype=np.float64)  # (G, T): share per unit of size
        self.capacity_total = np.asarray(capacity_total, dtype=np.float64)
        self._groups = pd.MultiIndex.from_arrays([self.request_class, self.requires_class])
        self._types = type_keys(self.type_class, self.type_shape)

    @staticmethod
    def _keys(request_class, requires_class) -> pd.MultiIndex:
        requires = pd.Series(requires_class, dtype=object)
        return pd.MultiIndex.from_arrays([pd.Series(request_class, dtype=object), requires.where(requires.notna(), "")])

    @classmethod
    def fit(cls, units, fleet) -> "SplitWeights":
        """Fit on ``units`` (``_fleet.Units``) routed over ``fleet`` (``_fleet.Fleet``)."""
        from ._routing import factorize_requirements

        group, groups = pd.factorize(cls._keys(units.request_class, units.requires_class))
        demand = np.stack([np.bincount(group, weights=units.demand[:, d], minlength=len(groups))
                           for d in range(units.demand.shape[1])], axis=1)
        order = np.argsort(-demand.sum(axis=1), kind="stable")  # a class's main group first (class_rows)
        demand, groups = demand[order], groups[order]
        request_class, requires = groups.get_level_values(0), groups.get_level_values(1)
        pool_of, pool_names = factorize_requirements(np.array([r if r != "" else None for r in requires], dtype=object))
        pools = [np.flatnonzero(fleet.eligible(r)) for r in pool_names]
        a, c, _ = scaled(demand, fleet.capacity)
        split = solve_split(a, np.asarray(pool_of, dtype=np.int64), c, pools, fleet.server_class)
        capacity_total = fleet.capacity.sum(axis=0)
        size = (fleet.capacity / capacity_total).mean(axis=1)
        shape = capacity_shape(fleet.capacity, SHAPE_DECIMALS)
        server_type, types = pd.factorize(type_keys(fleet.server_class, shape))
        # Servers of one type get one density (the LP splits a type by size); the mean absorbs rounding.
        density = split.share / size[None, :]
        count = np.bincount(server_type, minlength=len(types))
        per_type = np.stack([np.bincount(server_type, weights=row, minlength=len(types)) for row in density]) / count
        first = np.unique(server_type, return_index=True)[1]
        return cls(request_class, requires, fleet.server_class[first], shape[first], per_type, capacity_total)

    def group_index(self, units) -> np.ndarray:
        """Each unit's group (row of ``logits``), -1 for a group the fit never saw."""
        return self._groups.get_indexer(self._keys(units.request_class, units.requires_class))

    def class_rows(self, request_classes) -> np.ndarray:
        """For each request class, the row of its group with the most demand in the fit (-1: none).

        A runtime that scores classes, not groups, reads a class's routing off its main group."""
        rows = np.full(len(request_classes), -1, dtype=np.int64)
        for i, name in enumerate(request_classes):
            candidates = np.flatnonzero(self.request_class == name)
            if len(candidates):
                rows[i] = candidates[0]  # the fit numbers groups by demand, largest first
        return rows

    def server_types(self, fleet) -> np.ndarray:
        """Each server's type in the fit (-1: a type it never saw). ``known_share`` and ``logits`` take it, so
        that a caller that needs both per batch computes it once."""
        return self._types.get_indexer(type_keys(fleet.server_class, capacity_shape(fleet.capacity, SHAPE_DECIMALS)))

    def known_share(self, fleet, server_type: np.ndarray | None = None) -> float:
        """The share of ``fleet``'s capacity (each resource counted relative to the fit's fleet) on servers of
        types the fit saw."""
        server_type = self.server_types(fleet) if server_type is None else server_type
        size = (fleet.capacity / self.capacity_total).mean(axis=1)
        return float(size[server_type >= 0].sum() / size.sum())

    def logits(self, fleet, server_type: np.ndarray | None = None) -> np.ndarray:
        """(groups, servers of ``fleet``) log weights."""
        server_type = self.server_types(fleet) if server_type is None else server_type
        density = np.empty((len(self.density), len(fleet)))
        known = server_type >= 0
        density[:, known] = self.density[:, server_type[known]]
        unknown = np.flatnonzero(~known)
        for name in pd.unique(fleet.server_class[unknown]):  # servers of types the fit never saw, by class
            same_class = self.type_class == name
            mean = self.density[:, same_class if same_class.any() else slice(None)].mean(axis=1)
            density[:, unknown[fleet.server_class[unknown] == name]] = mean[:, None]
        weight = density * (fleet.capacity / self.capacity_total).mean(axis=1)[None, :]
        weight = np.maximum(weight, 1e-9 * weight.max(axis=1, keepdims=True))
        return np.log(np.maximum(weight, 1e-300)).astype(np.float32)

    def to_state(self) -> tuple[dict, dict]:
        """(arrays, JSON-able meta) to persist it beside a runtime's weights."""
        arrays = {"split_density": self.density, "split_capacity_total": self.capacity_total,
                  "split_type_shape": self.type_shape}
        meta = {"split_request_class": [str(x) for x in self.request_class],
                "split_requires_class": [str(x) for x in self.requires_class],
                "split_type_class": [str(x) for x in self.type_class]}
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict, meta: dict) -> "SplitWeights":
        return cls(meta["split_request_class"], meta["split_requires_class"], meta["split_type_class"],
                   arrays["split_type_shape"], arrays["split_density"], arrays["split_capacity_total"])
