"""The sharder's deployment descriptor: what a database and its trace *are*, from measured quantities only.

A vector of fixed length computed from a snapshot's ``items``, ``accesses``
and ``shards`` tables: how many rows and tables there are and how rows and
bytes divide among the tables (sorted shares in fixed slots), the shard
count and how uneven capacities are, how many rows a transaction touches
and how many transactions touch more than one, how concentrated accesses
are on the hottest rows, how much of the co-access one attribute explains
(what the construction's ``min_key_score`` thresholds), how much of it
crosses tables, and how much of the trace writes. Names (of tables,
columns, rows, attribute values) only group rows and are never read, so
renaming any of them, or reordering rows, leaves the descriptor unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._features import column_salt, key_column_scores
from ._hashing import value_hashes
from ._schema import attribute_columns
from ._trace import Shards, Trace, read_only_tables

TABLE_SLOTS = 4  # the largest tables' shares; a deployment with fewer tables has zeros in the rest

FIELDS: tuple[str, ...] = (
    "log_rows", "log_tables",
    *(f"table_row_share_{i + 1}" for i in range(TABLE_SLOTS)),
    *(f"table_byte_share_{i + 1}" for i in range(TABLE_SLOTS)),
    "row_bytes_log_mean", "row_bytes_log_std", "replicated_row_fraction",
    "log_shards", "capacity_largest_share_x_shards", "capacity_log_std", "log_rows_per_shard",
    "log_txns_per_row", "rows_per_txn_mean", "rows_per_txn_p90", "multi_row_txn_fraction",
    "touched_row_fraction", "top_1pct_row_access_share", "top_10pct_row_access_share",
    "best_key_score", "second_key_score", "best_key_largest_group_x_shards", "log_attribute_columns",
    "cross_table_pair_fraction", "write_share",
)


def describe(tables: dict) -> np.ndarray:
    """The descriptor (``len(FIELDS)`` floats) of the deployment a sharder snapshot's tables come from."""
    items, accesses = tables["items"], tables["accesses"]
    fleet = Shards.from_frame(tables["shards"])
    n_rows, n_shards = len(items), len(fleet)
    size = pd.to_numeric(items["size_bytes"]).to_numpy(dtype=np.float64)
    table_code, table_names = pd.factorize(items["table"].to_numpy(dtype=object))
    out: dict[str, float] = {"log_rows": np.log(max(n_rows, 1)), "log_tables": np.log(max(len(table_names), 1))}
    for kind, weights in (("row", None), ("byte", size)):
        per_table = np.sort(np.bincount(table_code, weights=weights, minlength=len(table_names)))[::-1]
        share = np.zeros(TABLE_SLOTS)
        share[: min(TABLE_SLOTS, len(per_table))] = (per_table / max(per_table.sum(), 1e-300))[:TABLE_SLOTS]
        out.update({f"table_{kind}_share_{i + 1}": float(v) for i, v in enumerate(share)})
    log_size = np.log(np.maximum(size, 1.0))
    out["row_bytes_log_mean"] = float(log_size.mean()) if n_rows else 0.0
    out["row_bytes_log_std"] = float(log_size.std()) if n_rows else 0.0

    replicated = read_only_tables(items, accesses)
    trace = Trace.build(items, accesses, replicated)
    out["replicated_row_fraction"] = float(1.0 - trace.partitioned.mean()) if n_rows else 0.0
    out["log_shards"] = np.log(n_shards)
    out["capacity_largest_share_x_shards"] = float(fleet.share.max() * n_shards)
    out["capacity_log_std"] = float(np.log(fleet.capacity).std())
    out["log_rows_per_shard"] = float(np.log(max(trace.partitioned.sum(), 1) / n_shards))

    # Transactions by the distinct partitioned rows they touch (replicated reads never make one distributed).
    width = np.bincount(trace.txn, minlength=trace.n_txns)
    touching = width[width > 0]
    out["log_txns_per_row"] = float(np.log(max(trace.n_txns, 1) / max(trace.partitioned.sum(), 1)))
    out["rows_per_txn_mean"] = float(touching.mean()) if len(touching) else 0.0
    out["rows_per_txn_p90"] = float(np.percentile(touching, 90)) if len(touching) else 0.0
    out["multi_row_txn_fraction"] = float((width > 1).mean()) if trace.n_txns else 0.0

    counts = np.sort(np.bincount(trace.access_row, minlength=n_rows)[trace.partitioned])[::-1]
    touched = counts[counts > 0]
    total = max(touched.sum(), 1)
    out["touched_row_fraction"] = float(len(touched) / max(len(counts), 1))
    out["top_1pct_row_access_share"] = float(touched[: max(1, len(touched) // 100)].sum() / total)
    out["top_10pct_row_access_share"] = float(touched[: max(1, len(touched) // 10)].sum() / total)

    multi = width[trace.txn] > 1
    txn, row = trace.txn[multi], trace.row[multi]
    out.update(_key_fields(items, txn, row, n_shards))
    out["cross_table_pair_fraction"] = _cross_table_pairs(txn, table_code[row], len(table_names))
    ops = accesses["op"].to_numpy(dtype=object)
    out["write_share"] = float((ops == "w").mean()) if len(ops) else 0.0
    return np.array([float(out[name]) for name in FIELDS], dtype=np.float64)


def _key_fields(items: pd.DataFrame, txn: np.ndarray, row: np.ndarray, n_shards: int) -> dict[str, float]:
    """The shares of co-accessed pairs the best and second-best attribute explain (``key_column_scores``: what
    ``min_key_score`` thresholds), and the best one's largest value group, times the shard count (a key is eligible while its
    largest group fits on one shard). Columns are ranked by what they measure, never by their names."""
    columns = attribute_columns(items)
    out = {"best_key_score": 0.0, "second_key_score": 0.0, "best_key_largest_group_x_shards": 0.0,
           "log_attribute_columns": float(np.log1p(len(columns)))}
    if not columns or not len(txn):
        return out
    scores = key_column_scores(items, txn, row)
    largest = {}
    for column in columns:
        hashes, present = value_hashes(items[column], column_salt(column))
        largest[column] = float(np.unique(hashes[present], return_counts=True)[1].max() / len(items)) if present.any() else 0.0
    ranked = sorted(columns, key=lambda c: (-scores[c], largest[c]))
    out["best_key_score"] = float(scores[ranked[0]])
    out["second_key_score"] = float(scores[ranked[1]]) if len(ranked) > 1 else 0.0
    out["best_key_largest_group_x_shards"] = largest[ranked[0]] * n_shards
    return out


def _cross_table_pairs(txn: np.ndarray, table: np.ndarray, n_tables: int) -> float:
    """Of the row pairs one transaction touches, the share whose rows belong to different tables."""
    per_txn = np.bincount(txn).astype(np.float64)
    pairs = (per_txn * (per_txn - 1) / 2).sum()
    if pairs <= 0:
        return 0.0
    same = np.unique(txn.astype(np.int64) * max(n_tables, 1) + table, return_counts=True)[1].astype(np.float64)
    return float(1.0 - (same * (same - 1) / 2).sum() / pairs)
