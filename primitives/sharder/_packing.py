"""From the learned soft placement to the table the runtime pins rows with.

The model gives each placement group (a warehouse, or one row) a
distribution over the training shards. Hashing groups by those
probabilities would balance only in expectation, and a few dozen large
groups (32 warehouses on 8 shards) never balance by chance. So, at export,
groups are packed greedily, largest first, each on the shard the model
prefers most among those it still fits on (accesses and bytes both within
``1 + slack`` of the shard's capacity share); a group that fits nowhere goes
where it raises the peak least. Scores on other shards stay, so the hashed
Gumbel-max still gives a new shard its share of groups.
"""

from __future__ import annotations

import numpy as np


def pack_groups(preference: np.ndarray, accesses: np.ndarray, size: np.ndarray, share: np.ndarray,
                slack: float) -> np.ndarray:
    """Shard position of every group.

    preference (G, S): the model's probabilities; accesses, size (G,): the group's load; share (S,).
    """
    n_groups, n_shards = preference.shape
    load = np.column_stack([accesses / max(accesses.sum(), 1e-12), size / max(size.sum(), 1e-12)])  # (G, 2)
    budget = (1.0 + slack) * share[:, None]  # (S, 2) in units of the total
    used = np.zeros((n_shards, 2))
    out = np.empty(n_groups, dtype=np.int64)
    weight = load.max(axis=1)
    order = np.argsort(-weight, kind="stable")
    ranked = np.argsort(-preference, axis=1, kind="stable")
    # Groups far below a shard's slack cannot overflow it alone: place them in bulk rounds,
    # each group on its first choice while every shard still has room for the whole round.
    big = order[weight[order] * n_groups > 1.0]  # heavier than average: one at a time
    small = order[weight[order] * n_groups <= 1.0]
    for g in big:
        out[g] = _first_fit(ranked[g], load[g], used, budget, share)
        used[out[g]] += load[g]
    _place_small(small, ranked, load, used, budget, share, out)
    return out


def _first_fit(choices: np.ndarray, load: np.ndarray, used: np.ndarray, budget: np.ndarray, share: np.ndarray) -> int:
    after = used[choices] + load
    fits = (after <= budget[choices]).all(axis=1)
    if fits.any():
        return int(choices[int(np.argmax(fits))])
    return int(choices[int(np.argmin((after / share[choices, None]).max(axis=1)))])


def _place_small(groups: np.ndarray, ranked: np.ndarray, load: np.ndarray, used: np.ndarray, budget: np.ndarray,
                 share: np.ndarray, out: np.ndarray) -> None:
    pending = groups
    rank = np.zeros(len(load), dtype=np.int64)
    n_shards = ranked.shape[1]
    while len(pending):
        choice = ranked[pending, np.minimum(rank[pending], n_shards - 1)]
        demand = np.zeros_like(used)
        np.add.at(demand, choice, load[pending])
        room = budget - used
        # A shard takes its whole round when it has room; otherwise it takes its groups in order while
        # they fit, and the rest try their next choice.
        accepted = np.zeros(len(pending), dtype=bool)
        for s in np.unique(choice):
            members = np.flatnonzero(choice == s)
            if (demand[s] <= room[s]).all():
                accepted[members] = True
                continue
            cumulative = np.cumsum(load[pending[members]], axis=0)
            accepted[members] = (cumulative <= room[s]).all(axis=1)
        exhausted = rank[pending] >= n_shards - 1
        for g in pending[~accepted & exhausted]:  # fits nowhere: least peak
            out[g] = _first_fit(ranked[g], load[g], used, budget, share)
            used[out[g]] += load[g]
        taken = pending[accepted]
        out[taken] = choice[accepted]
        np.add.at(used, choice[accepted], load[taken])
        pending = pending[~accepted & ~exhausted]
        rank[pending] += 1
