"""Discrete placement over the training trace: where the kernel starts and what the export ships.

``coarse_partition`` assigns the kernel's clusters to shards before training
(the best of an agglomerative start and random packings, each refined);
``group_placement`` turns the trained kernel's soft placement into the packed
table the runtime pins groups with (or a multilevel graph partition of the
same groups, METIS, where that splits fewer training transactions), or keeps
rows where they are when moving them would not pay.

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
from typing import NamedTuple

import numpy as np
import pandas as pd

from ._trace import distinct


class CoAccess(NamedTuple):
    """The training trace as label propagation reads it: the (transaction, group) pairs of transactions that
    touch two groups or more, and each group's weighted co-access with every transaction."""

    txn: np.ndarray              # (P,) transactions numbered 0..n_txns-1
    group: np.ndarray            # (P,)
    n_txns: int
    weighted: "scipy.sparse.csr_matrix"  # (G, n_txns): a transaction of m groups weighs 1/(m-1) for each of them
    self_weight: np.ndarray      # (G,) what a group adds to its own shard's affinity, taken off it

    @classmethod
    def of(cls, txn: np.ndarray, group: np.ndarray, n_groups: int) -> "CoAccess | None":
        """None where no transaction touches two groups."""
        from scipy import sparse

        pairs = distinct(txn.astype(np.int64) * n_groups + group)
        txn, group = pairs // n_groups, pairs % n_groups
        _, txn = np.unique(txn, return_inverse=True)
        width = np.bincount(txn)
        keep = width[txn] > 1
        txn, group = txn[keep], group[keep]
        if not len(txn):
            return None
        _, txn = np.unique(txn, return_inverse=True)
        width = np.bincount(txn).astype(np.float64)
        weight = 1.0 / (width - 1.0)
        weighted = sparse.csr_matrix((weight[txn], (txn, group)), shape=(len(width), n_groups)).T.tocsr()
        return cls(txn, group, len(width), weighted, np.asarray(weighted.sum(axis=1)).ravel())


def refine_groups(assignment: np.ndarray, txn: np.ndarray, group: np.ndarray, load: np.ndarray, share: np.ndarray,
                  slack: float, rounds: int = 10) -> np.ndarray:
    """Shard position of every group after ``rounds`` of balanced label propagation.

    assignment (G,): start; txn, group (P,): the (transaction, group) pairs of the training trace;
    load (G, 2): each group's share of all accesses and bytes; share (S,): capacity shares.
    """
    if len(share) < 2 or len(txn) == 0:
        return assignment.copy()
    return propagate(assignment, CoAccess.of(txn, group, len(assignment)), load, share, slack, rounds)


def propagate(assignment: np.ndarray, coaccess: CoAccess | None, load: np.ndarray, share: np.ndarray, slack: float,
              rounds: int) -> np.ndarray:
    """``refine_groups`` over a trace already read (``CoAccess.of``): starts that share a trace share the reading."""
    assignment = assignment.copy()
    n_groups, n_shards = len(assignment), len(share)
    if n_shards < 2 or coaccess is None:
        return assignment
    budget = (1.0 + slack) * share[:, None]
    used = np.zeros((n_shards, 2))
    np.add.at(used, assignment, load)
    groups = np.arange(n_groups)
    cells = coaccess.txn * n_shards
    for _ in range(rounds):
        # How many of each transaction's groups every shard holds, counted densely: building the sparse
        # (transaction x group) @ (group x shard) product it stands for cost more each round. The
        # product with ``weighted`` adds the same terms in the same order, so the affinities are the same floats.
        on_shard = np.bincount(cells + assignment[coaccess.group], minlength=coaccess.n_txns * n_shards)
        affinity = coaccess.weighted @ on_shard.reshape(coaccess.n_txns, n_shards).astype(np.float64)
        affinity[groups, assignment] -= coaccess.self_weight
        best = affinity.argmax(axis=1)
        gain = affinity[groups, best] - affinity[groups, assignment]
        movers = np.flatnonzero((gain > 1e-9) & (best != assignment))
        if not len(movers):
            break
        movers = movers[np.argsort(-gain[movers], kind="stable")]
        if not _move(movers, assignment, best, gain, load, used, budget):
            break
    return assignment


def _move(movers, assignment, best, gain, load, used, budget) -> int:
    """Apply the moves best gain first: a move that fits its target shard goes; one that does not is
    swapped with the first pending move the other way (in gain order, neither applied nor swapped yet),
    when both shards still fit after the swap. Updates ``assignment`` and ``used``; returns how many
    groups moved.

    Each move's fit depends on the loads that every earlier one left, so this is a loop, over plain floats:
    numpy's per-call cost on (2,) arrays was most of the old loop's time. Deciding a window of moves at
    once (guess which go, check every guess against a running sum of the loads they leave, redo from the
    first wrong one) gives the same placement but was slower still: a swap, or a move that fits where the
    guess said it would not, ends a window, and they come every few moves. On the 1,663 calls of six
    decodes: 0.79 s as numpy scalars, 1.09 s by windows, 0.09 s here. The loads add in the order the
    numpy rows did, so they are the same floats."""
    source, target = assignment[movers].tolist(), best[movers].tolist()
    access, size, mover_gain = load[movers, 0].tolist(), load[movers, 1].tolist(), gain[movers].tolist()
    used_access, used_size = used[:, 0].tolist(), used[:, 1].tolist()
    budget = np.broadcast_to(budget, used.shape)
    access_budget, size_budget = budget[:, 0].tolist(), budget[:, 1].tolist()
    pending: dict[tuple[int, int], deque] = {}
    for k, way in enumerate(zip(source, target)):
        pending.setdefault(way, deque()).append(k)
    done = [False] * len(movers)
    gone: list[int] = []  # positions that moved, in the order they did
    for k, (a, b) in enumerate(zip(source, target)):
        if done[k]:
            continue
        ka, ks = access[k], size[k]
        if used_access[b] + ka <= access_budget[b] and used_size[b] + ks <= size_budget[b]:
            used_access[a] -= ka
            used_size[a] -= ks
            used_access[b] += ka
            used_size[b] += ks
            done[k] = True
            gone.append(k)
            continue
        back = pending.get((b, a))
        while back and done[back[0]]:
            back.popleft()
        if not back:
            continue
        h = back[0]
        ha, hs = access[h], size[h]
        if mover_gain[k] + mover_gain[h] > 0 \
                and used_access[b] + ka - ha <= access_budget[b] and used_size[b] + ks - hs <= size_budget[b] \
                and used_access[a] + ha - ka <= access_budget[a] and used_size[a] + hs - ks <= size_budget[a]:
            back.popleft()
            used_access[b] += ka - ha
            used_size[b] += ks - hs
            used_access[a] += ha - ka
            used_size[a] += hs - ks
            done[k] = done[h] = True
            gone += [k, h]
    gone_movers = movers[np.asarray(gone, dtype=np.int64)]
    assignment[gone_movers] = best[gone_movers]
    used[:, 0], used[:, 1] = used_access, used_size
    return len(gone)


def coarse_partition(txn: np.ndarray, cluster: np.ndarray, load: np.ndarray, share: np.ndarray, slack: float,
                     seed: int, starts: int = 8, rounds: int = 50) -> np.ndarray:
    """Shard position of every cluster: the best, by the share of training transactions it makes
    distributed, of an agglomerative start (``agglomerate``) and ``starts`` balanced packings of random
    preferences, each refined by balanced label propagation."""
    from ._packing import pack_groups

    n_clusters, n_shards = len(load), len(share)
    keep = cluster >= 0
    txn, cluster = txn[keep], cluster[keep]
    candidates = [agglomerate(txn, cluster, load, share, slack)]
    for start in range(starts):
        rng = np.random.default_rng((seed, start))
        candidates.append(pack_groups(rng.random((n_clusters, n_shards)), load[:, 0], load[:, 1], share, slack))
    # Every start reads the same trace: read it once. A transaction spans shards as its distinct clusters
    # do, so the rate is taken over those (a few per transaction, not a row each).
    pairs = distinct(txn.astype(np.int64) * n_clusters + cluster)
    txn, cluster = pairs // n_clusters, pairs % n_clusters
    coaccess = CoAccess.of(txn, cluster, n_clusters)
    best, best_rate = None, np.inf
    for packed in candidates:
        part = propagate(packed, coaccess, load, share, slack, rounds)
        rate = span_rate(txn, part[cluster])
        if rate < best_rate:
            best, best_rate = part, rate
    return best


def agglomerate(txn: np.ndarray, cluster: np.ndarray, load: np.ndarray, share: np.ndarray, slack: float) -> np.ndarray:
    """Merge the two groups of clusters that transactions touch together most, as long as the merged group
    fits the largest shard, until there are as many groups as shards (or no merge fits); then pack the
    groups onto the shards. Finds the groups label propagation cannot reach one move at a time (four
    warehouses of one region, each worth a quarter of a shard)."""
    from scipy import sparse

    from ._packing import pack_groups

    n_clusters, n_shards = len(load), len(share)
    if not len(txn):
        return pack_groups(np.ones((n_clusters, n_shards)), load[:, 0], load[:, 1], share, slack)
    pairs = distinct(txn.astype(np.int64) * n_clusters + cluster)
    txn, cluster = pairs // n_clusters, pairs % n_clusters
    _, txn = np.unique(txn, return_inverse=True)
    width = np.bincount(txn).astype(np.float64)
    member = sparse.csr_matrix((np.ones(len(txn)), (txn, cluster)), shape=(len(width), n_clusters))
    weight = sparse.diags(1.0 / np.maximum(width - 1.0, 1.0))
    together = np.asarray((member.T @ weight @ member).todense())
    np.fill_diagonal(together, 0.0)
    cap = (1.0 + slack) * share.max()
    group = np.arange(n_clusters)
    group_load = load.astype(np.float64).copy()
    alive = np.ones(n_clusters, dtype=bool)
    while alive.sum() > n_shards:
        fits = ((group_load[:, None, :] + group_load[None, :, :]) <= cap).all(axis=2)
        score = np.where(fits & alive[:, None] & alive[None, :], together, -1.0)
        np.fill_diagonal(score, -1.0)
        a, b = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[a, b] < 0:
            break
        together[a] += together[b]
        together[:, a] += together[:, b]
        together[a, a] = 0.0
        together[b], together[:, b] = 0.0, 0.0
        group_load[a] += group_load[b]
        alive[b] = False
        group[group == b] = a
    roots = np.flatnonzero(alive)
    placed = pack_groups(np.ones((len(roots), n_shards)), group_load[roots, 0], group_load[roots, 1], share, slack)
    return placed[np.searchsorted(roots, group)]


def graph_partition(txn: np.ndarray, node: np.ndarray, weight: np.ndarray, share: np.ndarray) -> np.ndarray:
    """METIS part (shard position) of every node, parts weighing ``share`` of ``weight``: the graph joins a
    vertex per transaction of two nodes or more to each node it touches, so a cut edge is a transaction
    split across parts."""
    import pymetis

    n_nodes = len(weight)
    if len(share) == 1:
        return np.zeros(n_nodes, dtype=np.int64)
    keep = (np.bincount(txn) > 1)[txn]  # one-node transactions add no edge worth cutting
    txn_codes, txn_node = np.unique(txn[keep], return_inverse=True)
    a, b = node[keep], n_nodes + txn_node
    n_vertices = n_nodes + len(txn_codes)
    src, dst = np.concatenate([a, b]), np.concatenate([b, a])
    order = np.argsort(src, kind="stable")
    xadj = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n_vertices))]).astype(np.int64)
    adjncy = dst[order].astype(np.int64)
    vweights = np.concatenate([np.maximum(np.rint(weight / max(weight.sum(), 1e-12) * 1e6), 1),
                               np.zeros(len(txn_codes))]).astype(np.int64)
    target = share / share.sum()
    target[-1] = 1.0 - target[:-1].sum()
    _, parts = pymetis.part_graph(len(share), adjacency=pymetis.CSRAdjacency(xadj, adjncy), vweights=vweights,
                                  tpwgts=[float(t) for t in target])
    return np.asarray(parts[:n_nodes], dtype=np.int64)


def span_rate(txn: np.ndarray, shard: np.ndarray) -> float:
    """Share of the transactions (among those in ``txn``) whose rows sit on more than one shard."""
    if not len(txn):
        return 0.0
    # Without sorting the pairs: a transaction spans shards where any of its rows sits off the shard of
    # one of them (the last written for it here).
    some_shard = np.zeros(int(txn.max()) + 1, dtype=np.asarray(shard).dtype)
    some_shard[txn] = shard
    spread = np.zeros(len(some_shard), dtype=bool)
    spread[txn[shard != some_shard[txn]]] = True
    return float(spread[np.bincount(txn) > 0].mean())


def group_placement(datamodule, probability: np.ndarray, cluster: np.ndarray) -> tuple[np.ndarray, ...]:
    """(group keys, shard position, access share, cluster) of every placement group, and how it was chosen.

    A group's cluster is the one most of its load is nearest to: the runtime draws the group's hashes by
    cluster, so that what the trace touches together also moves together when the cluster changes.

    The model's probabilities, summed over each group's rows by accesses, are packed and refined over
    the older training transactions. Unless that placement beats where the rows already are on the
    newest tenth of the training trace by ``min_improvement``, groups stay on their current shard
    (the one holding most of their bytes; a row keyed by its own id stays exactly where it is): moving
    data for nothing is pure cost, and a trace with no structure (uniform keys) has nothing to gain.
    """
    from ._packing import pack_groups

    group, keys = pd.factorize(datamodule.keys)
    n_groups, n_shards = len(keys), probability.shape[1]
    weight = datamodule.accesses.astype(np.float64) + 1e-9
    preference = np.zeros((n_groups, n_shards))
    np.add.at(preference, group, probability * weight[:, None])
    preference /= preference.sum(axis=1, keepdims=True)
    accesses = np.bincount(group, weights=datamodule.accesses, minlength=n_groups)
    size = np.bincount(group, weights=datamodule.size, minlength=n_groups)
    load = np.column_stack([accesses / max(accesses.sum(), 1e-12), size / max(size.sum(), 1e-12)])
    share, slack = datamodule.fleet.share, datamodule.pack_slack
    txn, row = datamodule.train_pairs
    rounds = datamodule.refine_rounds
    shard = refine_groups(pack_groups(preference, accesses, size, share, slack), txn, group[row], load, share, slack, rounds)
    # A multilevel partition of the same groups' co-access graph, packed to the same capacities and refined
    # alike, is the other start: on sparse traces (a social graph of a few thousand transactions) a spectral
    # embedding with a few clusters per shard misses cuts that METIS finds. It is kept where it splits fewer
    # training transactions by the margin rows must win by to move (min_improvement): on uniform TPC-C every
    # balanced grouping of warehouses ties, and a new grouping won on noise would only reshuffle which ones share
    # a shard. The validation trace below still decides whether rows move at all.
    val_txn, val_row = datamodule.val_pairs
    model_rate = span_rate(val_txn, shard[group[val_row]])  # the kernel's own placement, whatever start wins
    start = "model"
    if datamodule.graph_start and n_shards > 1:
        # It reads the trace and the groups only, not the kernel: one per key column and slack, shared by the
        # exports of one trace (the trained kernel and its construction; the transfer's knob grid).
        cache_key = (datamodule.key_column, slack)
        if cache_key not in datamodule.graph_starts:
            graph = np.eye(n_shards)[graph_partition(txn, group[row], load.sum(axis=1), share)]
            datamodule.graph_starts[cache_key] = refine_groups(pack_groups(graph, accesses, size, share, slack), txn,
                                                               group[row], load, share, slack, rounds)
        graph = datamodule.graph_starts[cache_key]
        if span_rate(txn, graph[group[row]]) <= span_rate(txn, shard[group[row]]) - datamodule.min_improvement:
            shard, start = graph.copy(), "graph"  # the cached start stays as it was

    current = datamodule.current
    has = current >= 0
    held = np.zeros((n_groups, n_shards))
    np.add.at(held, (group[has], current[has]), datamodule.size[has] + 1e-9)
    stay = np.where(held.sum(axis=1) > 0, held.argmax(axis=1), shard)
    learned_rate = span_rate(val_txn, shard[group[val_row]])
    # Where the rows are today, row by row (a warehouse's rows are spread over every shard by hashing).
    today = np.where(current[val_row] >= 0, current[val_row], shard[group[val_row]])
    current_rate = span_rate(val_txn, today)
    moved = learned_rate <= current_rate - datamodule.min_improvement
    report = {"validation_distributed_rate": learned_rate, "current_distributed_rate": current_rate, "moves": bool(moved),
              "start": start, "validation_distributed_rate_model": model_rate}
    votes = np.zeros((n_groups, int(cluster.max()) + 1 if len(cluster) else 1))
    np.add.at(votes, (group, cluster), datamodule.access_share + datamodule.size_share + 1e-12)
    return (np.asarray(keys, dtype=np.uint64), (shard if moved else stay), accesses / max(accesses.sum(), 1e-12),
            votes.argmax(axis=1), report)


def final_placement(datamodule, keys: np.ndarray, shard: np.ndarray, groups_moved: bool) -> tuple[np.ndarray, ...]:
    """The placement the runtime ships, from the packed table's groups ``keys`` at positions ``shard``
    (``group_placement``'s): (group positions, then the item keys, shard positions and group keys of the
    training rows that leave their group's shard), and a report.

    A group pins all its rows (a warehouse's, a user's) to one shard; on a social trace a group's rows
    can belong to different communities, which Schism, placing every row on its own, serves. Label
    propagation over single rows, started from their groups' shards and within ``row_slack`` of each
    shard's share, finds them. Those moves are kept only where they split fewer of the newest tenth of
    the training transactions by ``min_improvement`` (the same gate as every other move): on TPC-C a
    warehouse's rows belong together and single moves are noise. Nothing is overridden where the groups
    themselves stay put, or where every row is its own group already.

    Once the gates have chosen, the groups (and the rows, where kept) are propagated again over the
    whole training trace, the newest tenth included: it is kept out of the choices, and then says most
    about the transactions to come. The validation rates reported are those of the choices.
    """
    from ._hashing import item_keys

    none = (np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64))
    share, rounds = datamodule.fleet.share, datamodule.refine_rounds
    (txn, row), (val_txn, val_row) = datamodule.train_pairs, datamodule.val_pairs
    if not groups_moved or len(share) < 2 or not len(txn):
        return (shard, *none, {"row_overrides": 0})
    whole = (np.concatenate([txn, val_txn + datamodule.n_train_txns]), np.concatenate([row, val_row]))
    load = np.column_stack([datamodule.access_share, datamodule.size_share])
    group = pd.Index(keys).get_indexer(datamodule.keys)
    group_load = np.zeros((len(keys), 2))
    np.add.at(group_load, group, load)
    final = refine_groups(shard, whole[0], group[whole[1]], group_load, share, datamodule.pack_slack, rounds)
    report = {"groups_refit_moved": int((final != shard).sum())}
    if datamodule.key_column is None or not datamodule.row_moves:
        return (final, *none, {**report, "row_overrides": 0})
    start = shard[group]
    moved = refine_groups(start, txn, row, load, share, datamodule.row_slack, rounds)
    rates = {"group": span_rate(val_txn, start[val_row]), "row": span_rate(val_txn, moved[val_row])}
    report.update({"validation_distributed_rate_groups": rates["group"], "validation_distributed_rate_rows": rates["row"]})
    if rates["row"] > rates["group"] - datamodule.min_improvement:
        return (final, *none, {**report, "row_overrides": 0})
    moved = refine_groups(final[group], *whole, load, share, datamodule.row_slack, rounds)
    changed = np.flatnonzero(moved != final[group])
    ids = datamodule.items["item_id"].to_numpy(dtype=object)[changed]
    return final, item_keys(ids), moved[changed], datamodule.keys[changed], {
        **report, "row_overrides": int(len(changed)), "validation_distributed_rate": rates["row"]}
