"""Balanced label propagation over the training trace: the last polish of the packed placement.

Packing keeps the model's preferences where the loads allow; it cannot see
that two groups it split are touched together. A few rounds of balanced
label propagation (Ugander & Backstrom, WSDM 2013, the method Facebook uses
to shard its social graph) move each placement group to the shard where the
rows it is accessed with live, best gain first, while every shard stays
within its capacity share plus the slack. The gain of a move is the
expected number of a transaction's other rows it joins (each transaction of
m groups weighs 1/(m-1) per pair), the smooth proxy of distributed
transactions that training also optimises.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def refine_groups(assignment: np.ndarray, txn: np.ndarray, group: np.ndarray, load: np.ndarray, share: np.ndarray,
                  slack: float, rounds: int = 10) -> np.ndarray:
    """Shard position of every group after ``rounds`` of balanced label propagation.

    assignment (G,): start; txn, group (P,): the (transaction, group) pairs of the training trace;
    load (G, 2): each group's share of all accesses and bytes; share (S,): capacity shares.
    """
    from scipy import sparse

    assignment = assignment.copy()
    n_groups, n_shards = len(assignment), len(share)
    if n_shards < 2 or len(txn) == 0:
        return assignment
    pairs = np.unique(txn.astype(np.int64) * n_groups + group)
    txn, group = pairs // n_groups, pairs % n_groups
    _, txn = np.unique(txn, return_inverse=True)
    width = np.bincount(txn)
    keep = width[txn] > 1
    txn, group = txn[keep], group[keep]
    if not len(txn):
        return assignment
    _, txn = np.unique(txn, return_inverse=True)
    width = np.bincount(txn).astype(np.float64)
    weight = 1.0 / (width - 1.0)
    member = sparse.csr_matrix((np.ones(len(txn)), (txn, group)), shape=(len(width), n_groups))
    weighted = sparse.csr_matrix((weight[txn], (txn, group)), shape=(len(width), n_groups)).T.tocsr()
    self_weight = np.asarray(weighted.sum(axis=1)).ravel()
    budget = (1.0 + slack) * share[:, None]
    used = np.zeros((n_shards, 2))
    np.add.at(used, assignment, load)
    for _ in range(rounds):
        on_shard = sparse.csr_matrix((np.ones(n_groups), (np.arange(n_groups), assignment)), shape=(n_groups, n_shards))
        affinity = np.asarray((weighted @ (member @ on_shard)).todense())
        affinity[np.arange(n_groups), assignment] -= self_weight
        best = affinity.argmax(axis=1)
        gain = affinity[np.arange(n_groups), best] - affinity[np.arange(n_groups), assignment]
        movers = np.flatnonzero((gain > 1e-9) & (best != assignment))
        if not len(movers):
            break
        movers = movers[np.argsort(-gain[movers], kind="stable")]
        if not _move(movers, assignment, best, gain, load, used, budget):
            break
    return assignment


def _move(movers, assignment, best, gain, load, used, budget) -> int:
    """Apply the moves best gain first: a move that fits its target shard goes; one that does not is
    swapped with the best pending move the other way, when both shards still fit after the swap."""
    pending: dict[tuple[int, int], deque] = {}
    for g in movers:
        pending.setdefault((int(assignment[g]), int(best[g])), deque()).append(int(g))
    done = np.zeros(len(assignment), dtype=bool)
    moved = 0
    for g in movers:
        if done[g]:
            continue
        a, b = int(assignment[g]), int(best[g])
        if (used[b] + load[g] <= budget[b]).all():
            used[a] -= load[g]
            used[b] += load[g]
            assignment[g], done[g] = b, True
            moved += 1
            continue
        back = pending.get((b, a))
        while back and (done[back[0]] or back[0] == g):
            back.popleft()
        if not back:
            continue
        h = back[0]
        if gain[g] + gain[h] > 0 and (used[b] + load[g] - load[h] <= budget[b]).all() \
                and (used[a] + load[h] - load[g] <= budget[a]).all():
            back.popleft()
            used[b] += load[g] - load[h]
            used[a] += load[h] - load[g]
            assignment[g], assignment[h] = b, a
            done[g] = done[h] = True
            moved += 2
    return moved


def coarse_partition(txn: np.ndarray, cluster: np.ndarray, load: np.ndarray, share: np.ndarray, slack: float,
                     seed: int, starts: int = 8, rounds: int = 50) -> np.ndarray:
    """Shard position of every cluster: the best of ``starts`` balanced packings (random preferences),
    each refined by balanced label propagation, judged by the share of transactions they make distributed."""
    from ._packing import pack_groups

    n_clusters, n_shards = len(load), len(share)
    keep = cluster >= 0
    txn, cluster = txn[keep], cluster[keep]
    best, best_rate = None, np.inf
    for start in range(starts):
        rng = np.random.default_rng((seed, start))
        packed = pack_groups(rng.random((n_clusters, n_shards)), load[:, 0], load[:, 1], share, slack)
        part = refine_groups(packed, txn, cluster, load, share, slack, rounds)
        spans = np.unique(txn * n_shards + part[cluster])
        rate = float((np.bincount(spans // n_shards) > 1).mean()) if len(spans) else 0.0
        if rate < best_rate:
            best, best_rate = part, rate
    return best
