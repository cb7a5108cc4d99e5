"""The sharder's deployment descriptor reads what a database and its trace are, never what they are called."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aiprim import primitives

SOURCE = {"workload": "tpcc", "warehouses": 6, "customers_per_district": 5, "catalogue_items": 80,
          "transactions": 3000, "shards": 3, "regions": 2}


@pytest.fixture(scope="module")
def tables():
    return primitives.get("sharder").generate(SOURCE, seed=3)[0]


def everything_renamed(tables: dict, seed: int = 1) -> dict:
    """Tables, item ids, attribute columns and their values under other names, and every frame's rows shuffled."""
    rng = np.random.default_rng(seed)
    items, accesses = tables["items"].copy(), tables["accesses"].copy()
    names = pd.unique(items["table"])
    items["table"] = items["table"].map(dict(zip(names, [f"relation-{i}" for i in rng.permutation(len(names))])))
    ids = dict(zip(items["item_id"], [f"row-{i}" for i in rng.permutation(len(items))]))
    items["item_id"] = items["item_id"].map(ids)
    accesses["item_id"] = accesses["item_id"].map(ids)
    txns = pd.unique(accesses["txn_id"])
    accesses["txn_id"] = accesses["txn_id"].map(dict(zip(txns, [f"x{i}" for i in rng.permutation(len(txns))])))
    for i, column in enumerate([c for c in items.columns if c.startswith("attr_")]):
        values = items[column].dropna().unique()
        mapping = dict(zip(values, rng.permutation(len(values)) + 1000))
        items[f"attr_z{i}"] = pd.array(items[column].map(mapping), dtype="Int64")
        items = items.drop(columns=column)
    return {"shards": tables["shards"].sample(frac=1.0, random_state=4).reset_index(drop=True),
            "items": items.sample(frac=1.0, random_state=2).reset_index(drop=True),
            "accesses": accesses.sample(frac=1.0, random_state=3).reset_index(drop=True)}


def test_renaming_and_reordering_leave_the_descriptor_unchanged(tables):
    from aiprim.primitives.sharder._descriptor import FIELDS

    sharder = primitives.get("sharder")
    original = sharder.describe_deployment(tables)
    assert original.shape == (len(FIELDS),) and np.isfinite(original).all()
    other = everything_renamed(tables)
    assert not set(other["items"]["table"]) & set(tables["items"]["table"])
    assert "attr_warehouse" not in other["items"]
    np.testing.assert_allclose(sharder.describe_deployment(other), original, rtol=1e-9, atol=1e-12)


def test_what_the_deployment_is_moves_the_descriptor(tables):
    from aiprim.primitives.sharder._descriptor import FIELDS

    sharder = primitives.get("sharder")
    base = dict(zip(FIELDS, sharder.describe_deployment(tables)))
    assert base["log_shards"] == pytest.approx(np.log(3)) and base["best_key_score"] > 0.3
    assert 0.0 < base["write_share"] < 1.0 and base["replicated_row_fraction"] > 0.0  # the item catalogue
    kv = dict(zip(FIELDS, sharder.describe_deployment(sharder.generate(
        {"workload": "kv", "keys": 3000, "transactions": 2000, "shards": 5, "zipf_exponent": 0.9}, seed=1)[0])))
    assert kv["log_shards"] == pytest.approx(np.log(5)) and kv["log_tables"] == 0.0
    assert kv["best_key_score"] == 0.0 and kv["cross_table_pair_fraction"] == 0.0
    uniform = dict(zip(FIELDS, sharder.describe_deployment(sharder.generate(
        {"workload": "kv", "keys": 3000, "transactions": 2000, "shards": 5}, seed=1)[0])))
    assert uniform["top_1pct_row_access_share"] < kv["top_1pct_row_access_share"]
