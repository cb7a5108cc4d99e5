"""The sharder's trace arrays (primitives/sharder/_trace.py) and the span rate of its export: the sort-based
code that replaced numpy's hash-based ``unique`` and per-access object lookups gives what the plain code
gives (kept here as the reference), nulls, unknown ids and replicated tables included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aiprim.primitives.sharder import _refine, _trace


def reference_read_only_tables(items: pd.DataFrame, *accesses: pd.DataFrame) -> frozenset[str]:
    """As _trace did before: every access's table looked up by its id as an object."""
    frames = [a for a in accesses if a is not None and len(a)]
    if not frames:
        return frozenset()
    trace = pd.concat([a[["item_id", "op"]] for a in frames], ignore_index=True)
    table_of = pd.Series(items["table"].to_numpy(dtype=object), index=items["item_id"].to_numpy(dtype=object))
    table = table_of.reindex(trace["item_id"].to_numpy(dtype=object)).to_numpy(dtype=object)
    written = set(table[trace["op"].to_numpy(dtype=object) == "w"])
    return frozenset(set(table) - written - {None, np.nan})


def drawn_trace(seed: int, dtype: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n_items, n_accesses = 300, 5000
    tables = np.array(["orders", "catalogue", "stock", "audit"])
    items = pd.DataFrame({"item_id": pd.array([f"i{k}" for k in range(n_items)], dtype=dtype),
                          "table": pd.array(tables[rng.integers(4, size=n_items)], dtype=dtype)})
    item_id = np.array([f"i{k}" for k in rng.integers(n_items, size=n_accesses)], dtype=object)
    op = np.where(rng.random(n_accesses) < 0.3, "w", "r").astype(object)
    op[items.set_index("item_id")["table"].reindex(item_id).to_numpy(dtype=object) == "catalogue"] = "r"  # read-only
    accesses = pd.DataFrame({"txn_id": pd.array([f"t{k}" for k in np.sort(rng.integers(800, size=n_accesses))], dtype=dtype),
                             "item_id": pd.array(item_id, dtype=dtype), "op": pd.array(op, dtype=dtype)})
    later = accesses.sample(frac=0.2, random_state=seed).reset_index(drop=True)
    return items, accesses, later


@pytest.mark.parametrize("dtype", ["str", "object"])
def test_read_only_tables_match_the_plain_lookup(dtype):
    items, accesses, later = drawn_trace(0, dtype)
    want = reference_read_only_tables(items, accesses, later)
    assert want == {"catalogue"}  # the case has one read-only table and three written
    assert _trace.read_only_tables(items, accesses, later) == want
    assert _trace.read_only_tables(items, accesses, None) == reference_read_only_tables(items, accesses)
    assert _trace.read_only_tables(items) == frozenset()


def test_an_id_not_in_items_or_null_neither_reads_nor_writes_a_table():
    items = pd.DataFrame({"item_id": ["a", "b"], "table": ["t", "u"]})
    accesses = pd.DataFrame({"txn_id": ["x", "x", "y", "y"], "item_id": ["a", "zz", None, "b"], "op": ["r", "w", "w", "r"]})
    assert _trace.read_only_tables(items, accesses) == reference_read_only_tables(items, accesses) == {"t", "u"}
    np.testing.assert_array_equal(_trace.item_rows(items, accesses["item_id"]), [0, -1, -1, 1])


@pytest.mark.parametrize("dtype", ["str", "object"])
def test_the_trace_pairs_match_a_plain_unique(dtype):
    items, accesses, _ = drawn_trace(1, dtype)
    replicated = frozenset({"catalogue"})
    trace = _trace.Trace.build(items, accesses, replicated)
    row = pd.Index(items["item_id"].to_numpy(dtype=object)).get_indexer(accesses["item_id"].to_numpy(dtype=object))
    txn, names = pd.factorize(accesses["txn_id"].to_numpy(dtype=object))
    keep = ~items["table"].isin(replicated).to_numpy()[row]
    pairs = np.unique(txn[keep] * len(items) + row[keep])
    assert trace.n_txns == len(names)
    np.testing.assert_array_equal(trace.txn, pairs // len(items))
    np.testing.assert_array_equal(trace.row, pairs % len(items))
    np.testing.assert_array_equal(trace.access_row, row[keep])
    shard_of_row = np.random.default_rng(1).integers(3, size=len(items))
    spans = np.unique(trace.txn * 3 + shard_of_row[trace.row])
    np.testing.assert_array_equal(_trace.txn_shard_counts(trace, shard_of_row, 3),
                                  np.bincount(spans // 3, minlength=trace.n_txns))


def test_distinct_is_a_sorted_unique():
    values = np.random.default_rng(2).integers(-50, 50, size=1000)
    np.testing.assert_array_equal(_trace.distinct(values), np.unique(values))
    assert len(_trace.distinct(np.array([], dtype=np.int64))) == 0


@pytest.mark.parametrize("seed", range(4))
def test_span_rate_counts_the_transactions_on_more_than_one_shard(seed):
    rng = np.random.default_rng(seed)
    txn = rng.integers(0, 300, size=2000) * 2  # numbers with gaps: transactions the pairs leave out count for nothing
    shard = rng.integers(0, 2 + seed, size=2000)
    shard[txn % 6 == 0] = 1  # some transactions on one shard whatever their rows
    spans = np.unique(txn * 8 + shard)
    counts = np.bincount(spans // 8)
    want = float((counts[counts > 0] > 1).mean())
    assert 0.0 < want < 1.0
    assert _refine.span_rate(txn, shard) == want
    assert _refine.span_rate(txn[:0], shard[:0]) == 0.0
