"""The access trace as arrays: rows indexed once, transactions as (txn, row) pairs.

A table that the trace reads and never writes (TPC-C's ``item`` catalogue) is
replicated on every shard, as any partitioned database deploys it (Schism
finds the same): its reads are served where the transaction runs, so they
never make a transaction distributed and add no load to one shard. Which
tables are replicated is a property of the workload, the same for every
placement that is scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._schema import require_columns


class PlacementError(ValueError):
    """Input a placement cannot be computed for (one readable line)."""


@dataclass(frozen=True)
class Shards:
    shard_id: np.ndarray  # int64 (S,)
    capacity: np.ndarray  # float64 (S,)

    @classmethod
    def from_frame(cls, shards: pd.DataFrame) -> "Shards":
        if len(shards) == 0:
            raise PlacementError("shards: no shard to place on")
        require_columns(shards, "shards", ("shard_id",), PlacementError)
        ids = pd.to_numeric(shards["shard_id"], errors="coerce")
        if (wrong := np.flatnonzero((ids.isna() | (ids != ids.round())).to_numpy())).size:
            given = shards["shard_id"].astype(object).iloc[int(wrong[0])]
            what = "is missing" if pd.isna(given) else f"{given!r} is not an integer (shards are numbered)"
            raise PlacementError(f"shards: shard_id of row {int(wrong[0])} {what}")
        ids = ids.to_numpy(dtype=np.int64)
        capacity = pd.to_numeric(shards["capacity"]).to_numpy(dtype=np.float64) if "capacity" in shards else np.ones(len(ids))
        if len(np.unique(ids)) != len(ids):
            raise PlacementError(f"shards: shard_id {pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]} appears twice")
        if not (np.isfinite(capacity) & (capacity > 0)).all():
            bad = int(np.flatnonzero(~(np.isfinite(capacity) & (capacity > 0)))[0])
            raise PlacementError(f"shards: shard {ids[bad]} has capacity {float(capacity[bad])!r}, must be > 0")
        return cls(ids, capacity)

    def __len__(self) -> int:
        return len(self.shard_id)

    @property
    def share(self) -> np.ndarray:
        return self.capacity / self.capacity.sum()

    def index_of(self, shard_ids) -> np.ndarray:
        """Position of each shard id in this set, -1 where absent (nulls too)."""
        values = pd.array(shard_ids, dtype="Int64")
        out = np.full(len(values), -1, dtype=np.int64)
        present = ~np.asarray(values.isna())
        out[present] = pd.Index(self.shard_id).get_indexer(np.asarray(values[present], dtype=np.int64))
        return out


def distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array. ``np.unique`` finds them with a hash table (numpy 2.3 on),
    which on the million (transaction, row) codes of a long trace is about 10x slower than this sort."""
    ordered = np.sort(values)
    keep = np.empty(len(ordered), dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def item_rows(items: pd.DataFrame, item_ids: pd.Series) -> np.ndarray:
    """Position in ``items`` of every id of ``item_ids``, -1 where absent (nulls too). Each distinct id is
    looked up once: a trace names its rows many times over."""
    codes, names = pd.factorize(item_ids)
    found = np.append(pd.Index(items["item_id"]).get_indexer(names), -1).astype(np.int64)
    return found[codes]  # a null id's code, -1, picks the appended -1


def read_only_tables(items: pd.DataFrame, *accesses: pd.DataFrame) -> frozenset[str]:
    """Tables the trace reads and never writes: replicated, so placement-neutral."""
    frames = [a for a in accesses if a is not None and len(a)]
    if not frames:
        return frozenset()
    table, names = pd.factorize(items["table"])  # -1 for a row without a table
    read = np.zeros(len(names) + 1, dtype=bool)  # the last slot collects ids not in items and rows without a table
    written = np.zeros(len(names) + 1, dtype=bool)
    for frame in frames:
        rows = item_rows(items, frame["item_id"])
        accessed = np.where(rows >= 0, table[rows], -1)
        read[accessed] = True
        written[accessed[(frame["op"] == "w").fillna(False).to_numpy(dtype=bool)]] = True
    read, written = read[:-1], written[:-1]
    return frozenset(np.asarray(names, dtype=object)[read & ~written].tolist())


@dataclass(frozen=True)
class Trace:
    """One access trace over one items frame.

    ``txn`` and ``row`` are the distinct (transaction, item row) pairs of the
    partitioned tables (replicated ones left out); ``access_row`` is the item
    row of every access of a partitioned table, duplicates kept (load).
    """

    n_txns: int
    txn: np.ndarray  # int64 (P,)
    row: np.ndarray  # int64 (P,)
    access_row: np.ndarray  # int64 (A,)
    partitioned: np.ndarray  # bool (items,): False for rows of replicated tables

    @classmethod
    def build(cls, items: pd.DataFrame, accesses: pd.DataFrame, replicated: frozenset[str] = frozenset()) -> "Trace":
        row = item_rows(items, accesses["item_id"])
        if (row < 0).any():
            bad = accesses.iloc[int(np.flatnonzero(row < 0)[0])]
            raise PlacementError(f"accesses: txn_id {bad['txn_id']!r} names item_id {bad['item_id']!r}, which is not in items")
        txn, names = pd.factorize(accesses["txn_id"])
        partitioned = ~items["table"].isin(replicated).to_numpy()
        keep = partitioned[row]
        access_row = row[keep].astype(np.int64)
        pairs = distinct(txn[keep].astype(np.int64) * len(items) + access_row)
        return cls(n_txns=len(names), txn=pairs // len(items), row=pairs % len(items), access_row=access_row,
                   partitioned=partitioned)


def txn_shard_counts(trace: Trace, shard_of_row: np.ndarray, n_shards: int) -> np.ndarray:
    """Distinct shards each transaction touches (0 for one that touches replicated tables only)."""
    pairs = distinct(trace.txn * n_shards + shard_of_row[trace.row])
    return np.bincount(pairs // n_shards, minlength=trace.n_txns)
