"""Hashed argmax routing: the shared core of rendezvous-style routers.

Every (unit, server) pair gets a stable uniform draw U from a hash. The unit
goes to ``argmax_s logit[s] - log(-log U[s])``: the Gumbel-max trick, so a
unit lands on server s with probability softmax(logit)[s], and because the
draw of a pair never changes, removing a server moves only the units it held
(a weighted rendezvous hash). Plain rendezvous is the case of equal logits.

Eligibility (``requires_class``) is a mask, and the replicas of an
anti-affinity group are placed jointly: replica r takes the r-th pick of one
ranking of servers, choosing a server in an unused zone while the eligible
fleet has one (and a new round of zones once all are used), so the rules
hold by construction rather than by penalty.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._fleet import Fleet, Units
from ._hashing import pair_hash, unit_interval32

_CHUNK = 16384  # units per block: bounds memory at chunk x servers x 8 bytes


def gumbel_scores(unit_hash: np.ndarray, fleet: Fleet, logits: np.ndarray) -> np.ndarray:
    """Perturbed scores (n, S) for units with these hashes; logits broadcast to (n, S)."""
    # 23-bit uniforms in float32 stay strictly inside (0, 1), so no score is
    # ever +inf (which an eligibility mask of -inf would turn into a NaN).
    g = unit_interval32(pair_hash(unit_hash, fleet.server_hash))
    np.log(g, out=g)
    np.negative(g, out=g)
    np.log(g, out=g)
    return np.subtract(logits, g, out=g) if np.shape(logits) == g.shape else logits - g


def route_units(units: Units, fleet: Fleet, profile_of_unit: np.ndarray, profile_logits: np.ndarray) -> np.ndarray:
    """Server index for every unit.

    profile_of_unit: int (U,) row of ``profile_logits`` (P, S) that scores the unit.
    """
    profile_logits = np.asarray(profile_logits, dtype=np.float32)
    choice = np.empty(len(units), dtype=np.int64)
    # One -inf mask per distinct requirement, gathered per block: a (units x
    # servers) mask for the whole batch would cost more than the routing.
    requirement_of_unit, requirements = factorize_requirements(units.requires_class)
    masks = np.stack([np.where(fleet.eligible(req), 0.0, -np.inf).astype(np.float32) for req in requirements])

    single = np.flatnonzero(units.anti_group < 0)
    for start in range(0, len(single), _CHUNK):
        idx = single[start : start + _CHUNK]
        scores = gumbel_scores(units.unit_hash[idx], fleet, profile_logits[profile_of_unit[idx]])
        scores += masks[requirement_of_unit[idx]]
        choice[idx] = scores.argmax(axis=1)

    replicas = np.flatnonzero(units.anti_group >= 0)
    if len(replicas):
        mask_of = lambda idx: masks[requirement_of_unit[idx]]  # noqa: E731
        choice[replicas] = _place_replicas(units, replicas, fleet, profile_of_unit, profile_logits, mask_of)
    return choice


def _place_replicas(units, replicas, fleet, profile_of_unit, profile_logits, mask_of) -> np.ndarray:
    group = units.anti_group[replicas]
    replica = units.replica[replicas]
    # One representative unit per group (its lowest replica present) fixes
    # the group's hash, profile and eligibility.
    order = np.lexsort((replica, group))
    groups, first = np.unique(group[order], return_index=True)
    rep = replicas[order[first]]
    zone, n_zones = fleet.zone_codes()
    picks = np.empty((len(groups), int(replica.max()) + 1), dtype=np.int64)
    for start in range(0, len(groups), _CHUNK):
        sl = slice(start, start + _CHUNK)
        r = rep[sl]
        scores = gumbel_scores(units.unit_hash[r], fleet, profile_logits[profile_of_unit[r]]) + mask_of(r)
        eligible = np.isfinite(scores)
        used = np.zeros_like(eligible)
        zone_free = np.ones((len(r), n_zones), dtype=bool)
        rows = np.arange(len(r))
        for k in range(picks.shape[1]):  # loop over replica rank, vectorised over groups
            # When every eligible server (zone) already holds a replica, a new
            # round starts: replicas spread as evenly as the fleet allows, and
            # a group larger than its eligible pool still gets served.
            used[~(eligible & ~used).any(axis=1)] = False
            open_ = eligible & ~used
            zone_free[~(open_ & zone_free[:, zone]).any(axis=1)] = True
            best = np.where(open_ & zone_free[:, zone], scores, -np.inf).argmax(axis=1)
            picks[sl, k] = best
            used[rows, best] = True
            zone_free[rows, zone[best]] = False
    group_row = np.searchsorted(groups, group)
    return picks[group_row, replica]


def factorize_requirements(requires_class: np.ndarray):
    codes, uniques = pd.factorize(requires_class, use_na_sentinel=False)
    return codes, [None if (u is None or u != u) else u for u in uniques]


def route_requests(units: Units, fleet: Fleet, unit_choice: np.ndarray) -> np.ndarray:
    """Broadcast per-unit server indexes to server ids per request."""
    return fleet.server_id[unit_choice[units.request_unit]]
