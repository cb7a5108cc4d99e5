"""Data tests of the sharder's snapshots: every bad input of the issue is rejected on one readable line
that names the table, the column and the first offending row; the snapshot is quarantined; a valid one
is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiprim.flows.cli import main
from tests.data.edits import edit as _edit, set_cell as _set

TINY = {"workload": "tpcc", "warehouses": 2, "customers_per_district": 5, "catalogue_items": 40,
        "transactions": 400, "shards": 2}


@pytest.fixture(scope="module")
def sharder_tables():
    from aiprim import primitives

    tables, _ = primitives.get("sharder").generate(TINY, seed=1)
    return tables


def _write(root: Path, tables: dict) -> Path:
    from aiprim import primitives
    from aiprim.primitives._snapshot import write_snapshot

    return write_snapshot("sharder", primitives.get("sharder").schema, tables, root, source="tests")


def _duplicate(column: str, row: int, of: int):
    def fn(frame):
        frame.loc[row, column] = frame.loc[of, column]
        return frame

    return fn


CASES = {
    "access naming an unknown item": (
        lambda t: _edit(t, "accesses", _set("item_id", 3, "ghost")),
        "table accesses: 1 rows break the rule: item_id names an item of items.parquet (first: txn_id '{txn}': item_id 'ghost')",
    ),
    "zero capacity": (
        lambda t: _edit(t, "shards", _set("capacity", 1, 0.0)),
        "table shards: 1 rows break the rule: capacity is a positive, finite number (first: shard_id 1: capacity=0.0)",
    ),
    "negative capacity": (
        lambda t: _edit(t, "shards", _set("capacity", 0, -2.0)),
        "table shards: 1 rows break the rule: capacity is a positive, finite number (first: shard_id 0: capacity=-2.0)",
    ),
    "duplicate item_id": (
        lambda t: _edit(t, "items", _duplicate("item_id", 1, 0)),
        "table items: 2 rows break the rule: item_id is unique (first: item_id 'warehouse/0000' on rows 0 and 1)",
    ),
    "duplicate shard_id": (
        lambda t: _edit(t, "shards", _duplicate("shard_id", 1, 0)),
        "table shards: 2 rows break the rule: shard_id is unique (first: shard_id 0 on rows 0 and 1)",
    ),
    "op other than r or w": (
        lambda t: _edit(t, "accesses", _set("op", 2, "u")),
        "table accesses: 1 rows break the rule: op is 'r' (read) or 'w' (write) (first: txn_id '{txn2}', item_id '{item2}': op='u')",
    ),
    "current_shard naming no shard": (
        lambda t: _edit(t, "items", _set("current_shard", 4, 99)),
        "table items: 1 rows break the rule: current_shard names a shard of shards.parquet (first: item_id '{item4}': current_shard 99)",
    ),
    "empty trace": (
        lambda t: _edit(t, "accesses", lambda f: f.iloc[:0]),
        "table accesses: 0 rows, at least 1 required",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_naming_table_column_and_row(case, project, sharder_tables, capsys):
    make, expected = CASES[case]
    accesses, items = sharder_tables["accesses"], sharder_tables["items"]
    expected = expected.format(txn=accesses["txn_id"].iloc[3], txn2=accesses["txn_id"].iloc[2],
                               item2=accesses["item_id"].iloc[2], item4=items["item_id"].iloc[4])
    directory = _write(project / "data" / "snapshots", make(sharder_tables))
    code = main(["validate", "sharder", str(directory)])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert err.startswith("aiprim: error: sharder snapshot") and expected in err, err
    assert not directory.exists(), "a rejected snapshot leaves the store"
    assert list((project / "data" / "quarantine" / "sharder").iterdir())


def test_valid_snapshot_is_accepted(project, sharder_tables, capsys):
    directory = _write(project / "data" / "snapshots", sharder_tables)
    assert main(["validate", "sharder", str(directory)]) == 0, capsys.readouterr().err
    assert directory.exists()


def test_placement_input_errors_are_one_line():
    """The runtime's own checks (a placement asked of a bad cluster) read as one line too."""
    import pandas as pd

    from aiprim.primitives.sharder._trace import PlacementError, Shards

    with pytest.raises(PlacementError, match=r"^shards: shard 3 has capacity 0.0, must be > 0$"):
        Shards.from_frame(pd.DataFrame({"shard_id": [1, 3], "capacity": [1.0, 0.0]}))
    with pytest.raises(PlacementError, match=r"^shards: shard_id 1 appears twice$"):
        Shards.from_frame(pd.DataFrame({"shard_id": [1, 1], "capacity": [1.0, 1.0]}))
