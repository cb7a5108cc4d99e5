"""From the learned soft placement to the table the runtime pins rows with.

The model gives each placement group (a warehouse, or one row) a
distribution over the training shards. Hashing groups by those
probabilities would balance only in expectation, and a few dozen large
groups (32 warehouses on 8 shards) never balance by chance. So, at export,
groups are packed greedily, largest first, each on the shard the model
prefers most among those it still fits on (accesses and bytes both within
``1 + slack`` of the shard's capacity share); a group that fits nowhere goes
where it raises the peak least; a last pass moves or swaps groups off any
shard still over its budget in one resource (greedy packing of two resources
can fill one shard's bytes and another's accesses). Scores on other shards stay,
so the hashed Gumbel-max still gives a new shard its share of groups.
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
    _repair(out, load, used, share, 1.0 + slack)
    return out


def _repair(out: np.ndarray, load: np.ndarray, used: np.ndarray, share: np.ndarray, bound: float,
            max_moves: int = 5000, candidates: int = 64) -> None:
    """Greedy packing of two resources can fill one shard's bytes and another's accesses. While some shard
    is over ``bound`` times its share in a resource, apply the single move, or the swap of two groups
    between it and another shard, that lowers the cluster's peak most; stop when none lowers it."""
    n_shards = len(share)
    for _ in range(max_moves):
        ratio = used / share[:, None]
        s, d = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        peak = ratio[s, d]
        if peak <= bound:
            return
        best = (peak - 1e-12, None)
        per_shard = ratio.max(axis=1)
        on_s = np.flatnonzero(out == s)
        # The groups of s that weigh most in the overloaded resource relative to the other one.
        lean = load[on_s, d] - load[on_s, 1 - d]
        movers = on_s[np.argsort(-lean, kind="stable")[:candidates]]
        for t in range(n_shards):
            if t == s:
                continue
            rest = np.delete(per_shard, [s, t]).max(initial=0.0)
            on_t = np.flatnonzero(out == t)
            back = on_t[np.argsort(load[on_t, d] - load[on_t, 1 - d], kind="stable")[:candidates]]
            # Moves of one group (h = none), then swaps of g (s -> t) with h (t -> s).
            give = np.vstack([np.zeros((1, 2)), load[back]])  # (H+1, 2)
            new_s = (used[s][None, None, :] - load[movers][:, None, :] + give[None, :, :]) / share[s]
            new_t = (used[t][None, None, :] + load[movers][:, None, :] - give[None, :, :]) / share[t]
            after = np.maximum(np.maximum(new_s.max(axis=2), new_t.max(axis=2)), rest)  # (G, H+1)
            g, h = np.unravel_index(int(np.argmin(after)), after.shape)
            if after[g, h] < best[0]:
                best = (after[g, h], (movers[g], t, back[h - 1] if h > 0 else None))
        if best[1] is None:
            return
        g, t, h = best[1]
        used[s] -= load[g]
        used[t] += load[g]
        out[g] = t
        if h is not None:
            used[t] -= load[h]
            used[s] += load[h]
            out[h] = s


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
