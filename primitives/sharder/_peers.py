"""Classical peers of the learned sharder: the placements it is measured against.

Each peer has ``place(items, shards) -> shard ids`` (one per item row); the
ones that learn from the trace are built with the training tables, never the
scored ones.

- ``hash``: what most deployments run: weighted rendezvous hashing of the
  item id over the shards (consistent: adding a shard moves only its share).
- ``range``: range partitioning of each table by its primary key (the item
  id, in its sort order), cut so that each shard holds its capacity share of
  the table's bytes seen in training; later ids fall into the ranges by
  order. A new shard set is re-cut (as a range-sharded store rebalances).
- ``manual_warehouse``: the partitioning a DBA writes for a warehouse-keyed
  schema: contiguous blocks of ``attr_warehouse`` values, a capacity share of
  the warehouses each; rows without a warehouse are hashed. Deployable, so it
  counts for promotion. Scored with no value when the column is absent.
- ``schism``: Schism (Curino et al., VLDB 2010): METIS (pymetis) partitions the
  co-access graph of the training trace (each transaction a node joined to
  the rows it touches, rows weighted by accesses and bytes); a lookup table
  places the rows it saw and a decision tree over the ``attr_*`` columns and
  the table (scikit-learn when installed, else the majority part per value of
  the first attribute) places the rest; with no attributes at all they are
  hashed. A new shard set is re-partitioned, parts matched to shards so that
  the most bytes stay.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._hashing import gumbel_argmax, item_keys, shard_hashes
from ._schema import WAREHOUSE, attribute_columns
from ._refine import graph_partition
from ._trace import PlacementError, Shards, Trace, distinct, read_only_tables


def hash_placement(item_ids, shards: pd.DataFrame | Shards) -> np.ndarray:
    """Weighted rendezvous hashing of item ids: shard id per item."""
    fleet = shards if isinstance(shards, Shards) else Shards.from_frame(shards)
    logits = np.log(fleet.capacity / fleet.capacity.mean())[None, :]
    choice = gumbel_argmax(item_keys(np.asarray(item_ids, dtype=object)), shard_hashes(fleet.shard_id), logits)
    return fleet.shard_id[choice]


def capacity_cuts(weights: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Part (0..k-1) of each element of an ordered sequence, cut so part j holds share[j] of the weight."""
    if len(weights) == 0:
        return np.zeros(0, dtype=np.int64)
    position = np.cumsum(weights) - 0.5 * weights
    bounds = np.cumsum(share)[:-1] * weights.sum()
    return np.searchsorted(bounds, position, side="right").astype(np.int64)


class HashPeer:
    name = "hash"

    def place(self, items: pd.DataFrame, shards: pd.DataFrame) -> np.ndarray:
        return hash_placement(items["item_id"].to_numpy(dtype=object), shards)


class RangePeer:
    name = "range"

    def __init__(self, training: dict):
        items, accesses = training["items"], training["accesses"]
        seen = items[items["item_id"].isin(accesses["item_id"])]
        self._known = {table: frame.sort_values("item_id", kind="stable") for table, frame in
                       seen[["item_id", "table", "size_bytes"]].groupby("table", sort=True)}
        self._all = seen.sort_values("item_id", kind="stable")

    def place(self, items: pd.DataFrame, shards: pd.DataFrame) -> np.ndarray:
        fleet = Shards.from_frame(shards)
        out = np.empty(len(items), dtype=np.int64)
        for table, rows in items.groupby("table", sort=False).indices.items():
            known = self._known.get(table, self._all)
            ids = known["item_id"].to_numpy(dtype=object)
            part = capacity_cuts(known["size_bytes"].to_numpy(dtype=np.float64), fleet.share)
            position = np.searchsorted(ids, items["item_id"].to_numpy(dtype=object)[rows], side="right") - 1
            out[rows] = part[np.clip(position, 0, max(len(part) - 1, 0))] if len(part) else 0
        return fleet.shard_id[out]


class ManualWarehousePeer:
    name = "manual_warehouse"

    def __init__(self, training: dict):
        items = training["items"]
        self.available = WAREHOUSE in items.columns and bool(items[WAREHOUSE].notna().any())
        self.unavailable_reason = f"the items have no {WAREHOUSE} column"
        if self.available:
            counts = items[WAREHOUSE].dropna().astype(np.int64).value_counts().sort_index()
            self._values, self._rows = counts.index.to_numpy(), counts.to_numpy(dtype=np.float64)

    def place(self, items: pd.DataFrame, shards: pd.DataFrame) -> np.ndarray:
        if not self.available:
            raise PlacementError(f"manual_warehouse: no {WAREHOUSE} column")
        fleet = Shards.from_frame(shards)
        out = hash_placement(items["item_id"].to_numpy(dtype=object), fleet)
        if WAREHOUSE not in items.columns:
            return out
        block = capacity_cuts(self._rows, fleet.share)  # contiguous warehouses, a capacity share of rows each
        values = pd.to_numeric(items[WAREHOUSE]).to_numpy(dtype=np.float64, na_value=np.nan)
        has = ~np.isnan(values)
        position = np.clip(np.searchsorted(self._values, values[has], side="right") - 1, 0, len(block) - 1)
        out[has] = fleet.shard_id[block[position]]
        return out


class SchismPeer:
    name = "schism"

    def __init__(self, training: dict):
        self._items, self._accesses = training["items"], training["accesses"]
        self._graph = None
        self._fits: dict[tuple, tuple] = {}
        self._first: np.ndarray | None = None  # shard of each seen row in the first fit: re-fits keep to it

    def _fit(self, fleet: Shards):
        key = (tuple(fleet.shard_id.tolist()), tuple(fleet.capacity.tolist()))
        if key in self._fits:
            return self._fits[key]
        items = self._items
        if self._graph is None:
            trace = Trace.build(items, self._accesses, read_only_tables(items, self._accesses))
            self._graph = (trace, distinct(trace.access_row))
        trace, seen = self._graph
        size = items["size_bytes"].to_numpy(dtype=np.float64)
        part_of_seen = metis_parts(trace, size, seen, fleet.share)
        part_to_shard = np.arange(len(fleet))
        if self._first is not None:  # re-partitioning: keep the most bytes where they were
            part_to_shard = _match_parts(part_of_seen, fleet.index_of(self._first), len(fleet), size[seen])
        shard_of_seen = fleet.shard_id[part_to_shard[part_of_seen]]
        if self._first is None:
            self._first = shard_of_seen
        lookup = pd.Series(shard_of_seen, index=items["item_id"].to_numpy(dtype=object)[seen])
        self._fits[key] = (lookup, _AttributeRule(items.iloc[seen], shard_of_seen))
        return self._fits[key]

    def place(self, items: pd.DataFrame, shards: pd.DataFrame) -> np.ndarray:
        fleet = Shards.from_frame(shards)
        lookup, rule = self._fit(fleet)
        out = np.array(lookup.reindex(items["item_id"].to_numpy(dtype=object)).to_numpy(dtype=np.float64, na_value=np.nan))
        missing = np.isnan(out)
        if missing.any():
            out[missing] = rule.predict(items[missing], fleet)
        return out.astype(np.int64)


def metis_parts(trace: Trace, size: np.ndarray, seen: np.ndarray, share: np.ndarray) -> np.ndarray:
    """METIS part of each seen row: the graph joins each transaction node to the rows it touches."""
    local = np.full(len(size), -1, dtype=np.int64)
    local[seen] = np.arange(len(seen))
    accesses = np.bincount(local[trace.access_row], minlength=len(seen)).astype(np.float64)
    weight = accesses / max(accesses.sum(), 1.0) + size[seen] / max(size[seen].sum(), 1.0)
    return graph_partition(trace.txn, local[trace.row], weight, share)


def _match_parts(part_of_seen: np.ndarray, previous: np.ndarray, k: int, size: np.ndarray) -> np.ndarray:
    """part -> shard position maximising the bytes that stay where they were (``previous``: position, -1 gone)."""
    from scipy.optimize import linear_sum_assignment

    overlap = np.zeros((k, k))
    valid = previous >= 0
    np.add.at(overlap, (part_of_seen[valid], previous[valid]), size[valid])
    rows, cols = linear_sum_assignment(-overlap)
    out = np.empty(k, dtype=np.int64)
    out[rows] = cols
    return out


class _AttributeRule:
    """Schism's explanation step: a decision tree from the attributes (and table) of the rows it saw to
    their shard, for rows it never saw; hashing when the rows have no attributes."""

    def __init__(self, seen_items: pd.DataFrame, shard_of_seen: np.ndarray):
        self.columns = attribute_columns(seen_items)
        self.tables = pd.Index(sorted(seen_items["table"].unique()))
        self.model = None
        self.majority: dict = {}
        if not self.columns:
            return
        features = self._features(seen_items)
        try:
            from sklearn.tree import DecisionTreeClassifier
        except ImportError:  # the majority part per value of the first attribute
            frame = pd.DataFrame({"value": features[:, 0], "shard": shard_of_seen})
            self.majority = frame.groupby("value")["shard"].agg(lambda s: s.value_counts().index[0]).to_dict()
            return
        self.model = DecisionTreeClassifier(min_samples_leaf=2, random_state=0).fit(features, shard_of_seen)

    def _features(self, items: pd.DataFrame) -> np.ndarray:
        columns = [pd.to_numeric(items[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                   if c in items else np.full(len(items), np.nan) for c in self.columns]
        columns.append(self.tables.get_indexer(items["table"]).astype(np.float64))
        return np.nan_to_num(np.column_stack(columns), nan=-1.0)

    def predict(self, items: pd.DataFrame, fleet: Shards) -> np.ndarray:
        out = hash_placement(items["item_id"].to_numpy(dtype=object), fleet).astype(np.float64)
        if not self.columns:
            return out
        features = self._features(items)
        if self.model is not None:
            guess = self.model.predict(features)
        else:
            guess = pd.Series(features[:, 0]).map(self.majority).to_numpy(dtype=np.float64, na_value=np.nan)
        ok = ~np.isnan(guess.astype(np.float64)) & np.isin(guess, fleet.shard_id)
        out[ok] = guess[ok]
        return out


PEERS = {HashPeer.name: lambda training: HashPeer(), RangePeer.name: RangePeer,
         ManualWarehousePeer.name: ManualWarehousePeer, SchismPeer.name: SchismPeer}
