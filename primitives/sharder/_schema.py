"""The sharder's tables, as TELEMETRY.md (schema_version 1) defines them.

Rules whose failure a person must find in a large file (a duplicate id, a
capacity of 0, an op that is neither read nor write, an access naming an
item that does not exist) are written as row rules with an explanation, so
the rejection names the first offending row, not only a count.

Any column of items.parquet whose name starts with ``attr_`` is an attribute
the runtime may use to place rows it has never seen; the two the manual peer
reads are declared here, the others are read as they come.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._schema import Column, Rule, Schema, Table, references

ATTRIBUTE_PREFIX = "attr_"
WAREHOUSE = "attr_warehouse"


def _show(value) -> str:
    """A cell as a person reads it: 99, not np.int32(99)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _unique(table: str, column: str) -> Rule:
    def check(frames):
        return ~frames[table][column].duplicated(keep=False)

    def explain(frames, i: int) -> str:
        values = frames[table][column]
        rows = np.flatnonzero((values == values.iloc[i]).to_numpy())
        return f"{column} {_show(values.iloc[i])} on rows {rows[0]} and {rows[1]}"

    return Rule(f"{column}_unique", f"{column} is unique", check, explain)


def _positive(table: str, column: str, key: str) -> Rule:
    def check(frames):
        values = pd.to_numeric(frames[table][column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            return pd.Series(np.isfinite(values) & (values > 0), index=frames[table].index)

    def explain(frames, i: int) -> str:
        frame = frames[table]  # cell by cell: a row of a mixed frame would turn the int key into a float
        return f"{key} {_show(frame[key].iloc[i])}: {column}={_show(frame[column].iloc[i])}"

    return Rule(f"{column}_positive", f"{column} is a positive, finite number", check, explain)


def _op_is_read_or_write(frames) -> pd.Series:
    return frames["accesses"]["op"].isin(["r", "w"])


def _explain_op(frames, i: int) -> str:
    row = {c: frames["accesses"][c].iloc[i] for c in ("txn_id", "item_id", "op")}
    return f"txn_id {_show(row['txn_id'])}, item_id {_show(row['item_id'])}: op={_show(row['op'])}"


def _explain_unknown_item(frames, i: int) -> str:
    row = {c: frames["accesses"][c].iloc[i] for c in ("txn_id", "item_id")}
    return f"txn_id {_show(row['txn_id'])}: item_id {_show(row['item_id'])}"


def _explain_unknown_shard(frames, i: int) -> str:
    row = {c: frames["items"][c].iloc[i] for c in ("item_id", "current_shard")}
    return f"item_id {_show(row['item_id'])}: current_shard {_show(row['current_shard'])}"


SHARDS = Table(
    "shards",
    (
        Column("shard_id", "int32"),
        Column("capacity", "float64", drift="mean"),
    ),
    rules=(_unique("shards", "shard_id"), _positive("shards", "capacity", "shard_id")),
)

ITEMS = Table(
    "items",
    (
        Column("item_id", "string", non_empty=True),
        Column("table", "string", non_empty=True, drift="distribution"),
        Column("size_bytes", "int64", min=0, drift="mean"),
        Column("current_shard", "int32", nullable=True),
        Column(WAREHOUSE, "int64", nullable=True, required=False),
        Column("attr_district", "int64", nullable=True, required=False),
    ),
    rules=(
        _unique("items", "item_id"),
        references("items", "current_shard", "shards", "shard_id", noun="shard", optional=True,
                   explain=_explain_unknown_shard),
    ),
)

ACCESSES = Table(
    "accesses",
    (
        Column("txn_id", "string", non_empty=True),
        Column("item_id", "string", non_empty=True),
        Column("op", "string", drift="distribution"),
        Column("ts", "float64", min=0.0),
    ),
    rules=(
        references("accesses", "item_id", "items", noun="item", explain=_explain_unknown_item),
        Rule("op_is_read_or_write", "op is 'r' (read) or 'w' (write)", _op_is_read_or_write, _explain_op),
    ),
)

SCHEMA = Schema(version=1, tables=(SHARDS, ITEMS, ACCESSES))


def attribute_columns(items: pd.DataFrame) -> list[str]:
    """The ``attr_*`` columns of an items frame, in a fixed order."""
    return sorted(c for c in items.columns if isinstance(c, str) and c.startswith(ATTRIBUTE_PREFIX))
