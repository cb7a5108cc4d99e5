"""Placement of the hottest routing units, learned from telemetry.

Hashing places each unit at random with the policy's probabilities, so the
load a server gets fluctuates around the policy's expectation by the weight
of the units that happen to land there; with skewed popularity a few
thousand hot keys carry most of that variance. The runtime therefore keeps a
small table, built at export from the training telemetry: the hottest units
(largest share of any resource's demand), each pinned to a server chosen
greedily, largest first, where it raises the expected peak utilisation the
least on top of what the softmax sends everywhere else. Cold units hash as
before.

The table is part of the model version, so routing stays deterministic and
consistent: removing a server sends only its pinned units back to hashing,
and a new server receives hashed units only (it takes less than its
capacity share until the next retrain re-packs the table).
"""

from __future__ import annotations

import numpy as np

from ._fleet import Fleet, Units
from ._routing import factorize_requirements


def expected_load(logits: np.ndarray, profile: np.ndarray, units: Units, fleet: Fleet, which: np.ndarray) -> np.ndarray:
    """(S, 3) load the softmax policy sends to each server from the units in ``which``.

    ``logits`` (P, S) scores profiles on servers; ``profile`` (U,) is each unit's row.
    """
    load = np.zeros((len(fleet), units.demand.shape[1]))
    requirement, names = factorize_requirements(units.requires_class)
    for code, name in enumerate(names):
        members = which & (requirement == code)
        if not members.any():
            continue
        eligible = fleet.eligible(name)
        rows, inverse = np.unique(profile[members], return_inverse=True)
        z = logits[rows][:, eligible]
        prob = np.exp(z - z.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        demand = np.stack([np.bincount(inverse, weights=units.demand[members, d], minlength=len(rows)) for d in range(load.shape[1])], 1)
        load[eligible] += prob.T @ demand
    return load


def pack_hot_units(logits: np.ndarray, profile: np.ndarray, units: Units, fleet: Fleet, n_hot: int) -> tuple[np.ndarray, np.ndarray]:
    """(unit hashes, server ids) of the ``n_hot`` hottest units, packed on top of the policy's expected load."""
    total = units.demand.sum(axis=0)
    weight = (units.demand / np.maximum(total, 1e-300)).max(axis=1)
    candidates = np.flatnonzero(units.anti_group < 0)  # replicas are placed jointly by their group
    hot = candidates[np.argsort(-weight[candidates], kind="stable")[:n_hot]]
    if len(hot) == 0:
        return np.array([], dtype=np.uint64), np.array([], dtype=object)
    cold = np.ones(len(units), dtype=bool)
    cold[hot] = False
    load = expected_load(logits, profile, units, fleet, cold)
    scale = fleet.capacity * (total / fleet.capacity.sum(axis=0))  # utilisation / ideal = load / scale
    masks = {}
    servers = np.empty(len(hot), dtype=np.int64)
    for i, u in enumerate(hot):  # largest first; a few thousand steps, at export only
        req = units.requires_class[u]
        if req not in masks:
            masks[req] = fleet.eligible(req)
        peak = ((load + units.demand[u]) / scale).max(axis=1)
        peak[~masks[req]] = np.inf
        servers[i] = int(np.argmin(peak))
        load[servers[i]] += units.demand[u]
    return units.unit_hash[hot], fleet.server_id[servers]


def finish_export(runtime, units: Units, fleet: Fleet, hot_units: int, lp_split: bool) -> None:
    """What every balancer export does after the kernel: route the training telemetry's request classes by the
    split LP fitted on it (``BalancerRuntime.attach_split``) where ``lp_split``, then pack the hot-unit table
    on top of that policy's expected load."""
    if lp_split:
        from ._lp import SplitWeights

        runtime.attach_split(SplitWeights.fit(units, fleet))
    if hot_units > 0:
        names, servers = pack_hot_units(runtime.fleet_logits(fleet), runtime.profile_index(units), units, fleet, hot_units)
        runtime.attach_hot_table(names, servers)
