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

import functools
import itertools

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
    is over ``bound`` times its share in a resource, apply the move of one group off the peak shard, or the
    swap of one for a group of another shard, that lowers the cluster's peak most. Where none lowers it,
    apply the move (else swap) off the fullest over-full shard that has one that lowers the overload most
    without raising the peak. Stop when neither is left.

    The overload is the sum over shards and resources of share x (ratio - bound)^2 above the bound: it
    moves load from a fuller shard to an emptier one. Lowering the peak alone stalls once every other
    shard is near the peak in one resource (any move off the peak shard raises one past it), where a
    chain through a shard over in only one resource, taking a group and passing another on, lowers it.

    A peak shard holding at most ``candidates`` groups (warehouses, clusters) is scored for moves and swaps
    together: a swap of large groups can lower the peak far more than any move, and the overload then only
    takes over where a search for the peak alone stalls, so the pass never ends higher than that search.
    One holding rows is scored for swaps only where no move lowers the peak: rows take a move each,
    hundreds of them, and scoring swaps costs ``candidates`` times as much."""
    if len(share) < 2:
        return
    # Per resource d, every group, the heaviest in d relative to the other resource first: heaviest[d] holds
    # the movers off a shard over in d, heaviest[1 - d] what another shard sends back to it.
    heaviest = [np.argsort(load[:, 1 - d] - load[:, d], kind="stable") for d in (0, 1)]
    for _ in range(max_moves):
        per_shard = (used / share[:, None]).max(axis=1)
        peak = per_shard.max()
        if peak <= bound:
            return
        over = np.argsort(-per_shard, kind="stable")[: int((per_shard > bound).sum())]  # the fullest first

        # Scored once per step: the peak search and the overload search ask for the same (shard, swaps) scores,
        # which every applied exchange changes, so the cache lives for one step only.
        @functools.cache
        def exchanges(s: int, swaps: bool):
            return _exchanges(s, out, load, used, share, bound, heaviest, candidates, swaps)

        exchange = None
        few = (out == over[0]).sum() <= candidates
        for swaps in (True,) if few else (False, True):
            at, after, _ = exchanges(over[0], swaps)
            if after.min() < peak - 1e-12:
                exchange = at(int(np.argmin(after)))
                break
        for s, swaps in itertools.product(over, (False, True)) if exchange is None else ():
            at, after, change = exchanges(s, swaps)
            change = np.where(after > peak, np.inf, change)
            if change.min() < -1e-15:
                exchange = at(int(np.argmin(change)))
                break
        if exchange is None:
            return
        g, t, h = exchange
        s = out[g]
        used[s] -= load[g]
        used[t] += load[g]
        out[g] = t
        if h >= 0:
            used[t] -= load[h]
            used[s] += load[h]
            out[h] = s


def _exchanges(s: int, out: np.ndarray, load: np.ndarray, used: np.ndarray, share: np.ndarray, bound: float,
               heaviest: list[np.ndarray], candidates: int, swaps: bool):
    """The moves of the ``candidates`` groups of shard s heaviest in its fuller resource d (relative to the
    other) to every other shard, and with ``swaps`` their swaps with each such shard's ``candidates``
    lightest in d, scored at once: (the exchange at a flat index as (group, target shard, group sent back
    or -1), the cluster's peak after each, the change of the overload)."""
    ratio = used / share[:, None]
    per_shard = ratio.max(axis=1)
    d = int(np.argmax(ratio[s]))
    is_target = np.arange(len(share)) != s
    targets = np.flatnonzero(is_target)
    movers = heaviest[d][out[heaviest[d]] == s][:candidates]
    back = np.full((len(targets), candidates + 1 if swaps else 1), -1)  # column 0, nothing back: a move
    if swaps:
        shard_of = out[heaviest[1 - d]]
        for i, t in enumerate(targets):
            on_t = heaviest[1 - d][shard_of == t][:candidates]  # the lightest in d first
            back[i, 1:len(on_t) + 1] = on_t
    # (resource, target, mover, sent back): resources first, so that reducing over them is element-wise.
    give = np.where(back >= 0, load[back].transpose(2, 0, 1), 0.0)[:, :, None, :]
    take = load[movers].T[:, None, :, None]
    t_share = share[targets][:, None, None]
    new_s = (used[s][:, None, None, None] - take + give) / share[s]
    new_t = (used[targets].T[:, :, None, None] + take - give) / t_share
    # The peak over the shards other than s and the target.
    rest = np.where(np.eye(len(share), dtype=bool)[targets], 0.0, np.where(is_target, per_shard, 0.0)).max(axis=1)
    after = np.maximum(np.maximum(np.maximum(new_s[0], new_s[1]), np.maximum(new_t[0], new_t[1])),
                       rest[:, None, None])

    def overload(r, weight):
        excess = np.maximum(r - bound, 0.0)
        return weight * (excess[0] ** 2 + excess[1] ** 2)

    change = (overload(new_s, share[s]) - overload(ratio[s], share[s])
              + overload(new_t, t_share) - overload(ratio[targets].T[:, :, None, None], t_share))

    def at(k: int) -> tuple[int, int, int]:
        i, g, h = np.unravel_index(k, after.shape)
        return int(movers[g]), int(targets[i]), int(back[i, h])

    return at, after.ravel(), change.ravel()


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
        taken = pending[accepted]
        out[taken] = choice[accepted]
        np.add.at(used, choice[accepted], load[taken])
        # Booked after this round's accepted groups, so that none is seen to fit where they took the room.
        for g in pending[~accepted & exhausted]:  # fits nowhere: least peak
            out[g] = _first_fit(ranked[g], load[g], used, budget, share)
            used[out[g]] += load[g]
        pending = pending[~accepted & ~exhausted]
        rank[pending] += 1
