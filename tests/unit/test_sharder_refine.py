"""The sharder's label propagation (primitives/sharder/_refine.py) and the datamodule's coarse partition: the
faster code places exactly as the plain code it replaced (kept here as the reference), and the partition is
built once, when it is read."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from aiprim.primitives.sharder import _model, _refine

SOURCE = {"workload": "tpcc", "warehouses": 6, "customers_per_district": 5, "catalogue_items": 60,
          "transactions": 3000, "shards": 3}


def reference_move(movers, assignment, best, gain, load, used, budget) -> tuple[int, int]:
    """The moves one at a time on numpy rows, as _refine did before: (groups moved, swaps)."""
    pending: dict[tuple[int, int], deque] = {}
    for g in movers:
        pending.setdefault((int(assignment[g]), int(best[g])), deque()).append(int(g))
    done = np.zeros(len(assignment), dtype=bool)
    moved = swaps = 0
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
            moved, swaps = moved + 2, swaps + 1
    return moved, swaps


def reference_refine(assignment, txn, group, load, share, slack, rounds):
    """refine_groups as it was: the shard counts as a sparse product each round, the reference moves."""
    from scipy import sparse

    assignment = assignment.copy()
    n_groups, n_shards = len(assignment), len(share)
    pairs = np.unique(txn.astype(np.int64) * n_groups + group)
    txn, group = pairs // n_groups, pairs % n_groups
    _, txn = np.unique(txn, return_inverse=True)
    keep = np.bincount(txn)[txn] > 1
    _, txn = np.unique(txn[keep], return_inverse=True)
    group = group[keep]
    width = np.bincount(txn).astype(np.float64)
    member = sparse.csr_matrix((np.ones(len(txn)), (txn, group)), shape=(len(width), n_groups))
    weighted = sparse.csr_matrix(((1.0 / (width - 1.0))[txn], (txn, group)), shape=(len(width), n_groups)).T.tocsr()
    self_weight = np.asarray(weighted.sum(axis=1)).ravel()
    budget = (1.0 + slack) * share[:, None]
    used = np.zeros((n_shards, 2))
    np.add.at(used, assignment, load)
    every = np.arange(n_groups)
    for _ in range(rounds):
        on_shard = sparse.csr_matrix((np.ones(n_groups), (every, assignment)), shape=(n_groups, n_shards))
        affinity = np.asarray((weighted @ (member @ on_shard)).todense())
        affinity[every, assignment] -= self_weight
        best = affinity.argmax(axis=1)
        gain = affinity[every, best] - affinity[every, assignment]
        movers = np.flatnonzero((gain > 1e-9) & (best != assignment))
        if not len(movers):
            break
        movers = movers[np.argsort(-gain[movers], kind="stable")]
        if not reference_move(movers, assignment, best, gain, load, used, budget)[0]:
            break
    return assignment


def shares(rng, n: int) -> np.ndarray:
    x = rng.gamma(0.5, size=n) + 1e-3
    return x / x.sum()


def tight_moves(seed: int):
    """Moves among shards filled to their budget or past it, so that moves fit, swap and stay put."""
    rng = np.random.default_rng(seed)
    n_groups, n_shards = int(rng.integers(5, 300)), int(rng.integers(2, 9))
    load = np.column_stack([shares(rng, n_groups), shares(rng, n_groups)])
    assignment = rng.integers(n_shards, size=n_groups)
    best = (assignment + rng.integers(1, n_shards, size=n_groups)) % n_shards
    gain = rng.exponential(size=n_groups)
    # Ties in gain, as rounds of integer co-access counts give: the stable order keeps them in group order.
    gain[rng.random(n_groups) < 0.3] = 1.0
    movers = np.flatnonzero(rng.random(n_groups) < 0.8)
    movers = movers[np.argsort(-gain[movers], kind="stable")]
    used = np.zeros((n_shards, 2))
    np.add.at(used, assignment, load)
    share = shares(rng, n_shards)
    budget = (1.0 + rng.uniform(0.0, 0.1)) * share[:, None]
    return movers, assignment, best, gain, load, used, budget


def random_trace(seed: int, n_groups: int, n_txns: int, n_shards: int):
    """(start, txn, group, load, share): transactions of 1-6 groups, mostly within one of a few communities."""
    rng = np.random.default_rng(seed)
    community = rng.integers(n_shards * 2, size=n_groups)
    width = rng.integers(1, 7, size=n_txns)
    txn = np.repeat(np.arange(n_txns), width)
    home = rng.integers(n_shards * 2, size=n_txns)[txn]
    local = rng.random(len(txn)) < 0.85
    members = [np.flatnonzero(community == c) for c in range(n_shards * 2)]
    group = rng.integers(n_groups, size=len(txn))
    for c, rows in enumerate(members):
        at = local & (home == c)
        if len(rows):
            group[at] = rng.choice(rows, size=at.sum())
    load = np.column_stack([shares(rng, n_groups), shares(rng, n_groups)])
    return rng.integers(n_shards, size=n_groups), txn, group, load, shares(rng, n_shards)


def test_moves_decide_as_one_numpy_row_at_a_time():
    moved = swaps = refused = 0
    for seed in range(300):
        movers, assignment, best, gain, load, used, budget = tight_moves(seed)
        want_assignment, want_used = assignment.copy(), used.copy()
        want = reference_move(movers, want_assignment, best, gain, load, want_used, budget)

        got = _refine._move(movers, assignment, best, gain, load, used, budget)

        assert got == want[0]
        np.testing.assert_array_equal(assignment, want_assignment)
        np.testing.assert_array_equal(used, want_used)  # the same floats: later rounds compare them to the budget
        moved, swaps = moved + want[0], swaps + want[1]
        refused += int((want_assignment[movers] != best[movers]).sum())
    assert swaps > 100 and moved - 2 * swaps > 100 and refused > 100  # every branch, often


@pytest.mark.parametrize("seed, n_groups, n_txns, n_shards, slack", [
    (0, 12, 400, 3, 0.03), (1, 40, 3000, 5, 0.01), (2, 2000, 6000, 8, 0.08), (3, 300, 50, 2, 0.0)])
def test_label_propagation_places_as_the_sparse_products_did(seed, n_groups, n_txns, n_shards, slack):
    start, txn, group, load, share = random_trace(seed, n_groups, n_txns, n_shards)
    want = reference_refine(start, txn, group, load, share, slack, 30)
    assert (want != start).any()  # the case moves something

    np.testing.assert_array_equal(_refine.refine_groups(start, txn, group, load, share, slack, 30), want)


def test_starts_that_share_one_reading_of_the_trace_refine_as_alone():
    # coarse_partition reads the (transaction, cluster) pairs once, without repeats, for all its starts.
    start, txn, group, load, share = random_trace(4, 24, 2000, 4)
    distinct = np.unique(txn * 24 + group)
    coaccess = _refine.CoAccess.of(distinct // 24, distinct % 24, 24)
    rng = np.random.default_rng(4)
    for begin in [start, *rng.integers(4, size=(5, 24))]:
        refined = _refine.propagate(begin, coaccess, load, share, 0.03, 50)
        np.testing.assert_array_equal(refined, _refine.refine_groups(begin, txn, group, load, share, 0.03, 50))
        assert _refine.span_rate(distinct // 24, refined[distinct % 24]) == _refine.span_rate(txn, refined[group])


def test_no_co_access_leaves_the_start_alone():
    start = np.array([0, 1, 1, 0])
    load, share = np.full((4, 2), 0.25), np.array([0.5, 0.5])
    singles = np.arange(4)  # every transaction touches one group
    assert _refine.CoAccess.of(singles, singles, 4) is None
    np.testing.assert_array_equal(_refine.propagate(start, None, load, share, 0.03, 10), start)
    np.testing.assert_array_equal(_refine.refine_groups(start, singles, singles, load, share, 0.03, 10), start)


@pytest.fixture(scope="module")
def training_tables():
    from aiprim import primitives

    prim = primitives.get("sharder")
    tables, _ = prim.generate(SOURCE, seed=3)
    return prim.split(tables, 0.2)[0]


def datamodule(tables, **knobs):
    return _model.SharderDataModule(tables["items"], tables["accesses"], tables["shards"], seed=0, **knobs)


def test_a_reconfigured_module_starts_the_kernel_where_one_built_with_its_knobs_does(training_tables):
    knobs = {"clusters_per_shard": 2, "min_key_score": 0.3, "pack_slack": 0.08}
    built = datamodule(training_tables, **knobs)

    reconfigured = datamodule(training_tables).reconfigured(**knobs, seed=0)

    assert reconfigured.key_column == built.key_column and reconfigured.pack_slack == built.pack_slack
    np.testing.assert_array_equal(reconfigured.prototypes, built.prototypes)
    np.testing.assert_array_equal(reconfigured.cluster_shard, built.cluster_shard)
    assert len(built.cluster_shard) == 2 * len(training_tables["shards"])


def test_the_coarse_partition_is_built_once_when_read(training_tables, monkeypatch):
    calls = []
    partition = _model.coarse_partition

    def counted(txn, cluster, load, share, slack, seed):
        calls.append(slack)
        return partition(txn, cluster, load, share, slack, seed)

    monkeypatch.setattr(_model, "coarse_partition", counted)
    base = datamodule(training_tables)
    reconfigured = base.reconfigured(clusters_per_shard=2, min_key_score=0.15, pack_slack=0.08)
    assert calls == []  # the transfer decode builds a module only to reconfigure it

    first = reconfigured.cluster_shard
    assert reconfigured.prototypes.shape[0] == len(first) and reconfigured.cluster_shard is first
    assert calls == [0.08]
    base.cluster_shard
    assert calls == [0.08, 0.03]  # each with its own slack, once
