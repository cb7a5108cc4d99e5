"""Unit tests of the sharder's pieces: the numpy runtime computes what the trained kernel does, the
hashed Gumbel-max samples the softmax, packing respects its budget, keys group what they should."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

SOURCE = {"workload": "tpcc", "warehouses": 4, "customers_per_district": 5, "catalogue_items": 60,
          "transactions": 3000, "shards": 2}
PARAMS = {"max_epochs": 1, "steps_per_epoch": 3, "txns_per_step": 512}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import lightning as L

    from aiprim import primitives

    prim = primitives.get("sharder")
    tables, _ = prim.generate(SOURCE, seed=2)
    train, _ = prim.split(tables, 0.2)
    params = prim.params(PARAMS)
    datamodule = prim.build_datamodule(train, params, 0)
    module = prim.build_module(datamodule, params)
    L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, datamodule)
    directory = tmp_path_factory.mktemp("sharder-runtime")
    prim.export_runtime(module, datamodule, directory)
    return prim, tables, datamodule, module, prim.load_runtime(directory)


def test_numpy_attribute_path_matches_the_trained_kernel(built):
    import torch

    _, _, datamodule, module, runtime = built
    static = datamodule.static
    with torch.no_grad():
        logits = module.kernel(torch.as_tensor(static["table"]), torch.as_tensor(static["attrs"]),
                               torch.as_tensor(static["size_feature"]), torch.as_tensor(static["coaccess"]),
                               torch.zeros(len(static["table"])))
        expected = torch.log_softmax(logits + module.log_share, dim=1).numpy()
    np.testing.assert_allclose(runtime.attribute_scores(datamodule.items), expected, atol=2e-4)


def test_a_saved_runtime_places_as_the_trained_one(built, tmp_path):
    prim, tables, _, _, runtime = built
    runtime.save(tmp_path)
    again = prim.load_runtime(tmp_path)
    np.testing.assert_array_equal(again.place(tables["items"], tables["shards"]),
                                  runtime.place(tables["items"], tables["shards"]))
    assert again.predict_frame(tables["items"].head(7), {"shards": tables["shards"]}).name == "shard_id"


def test_input_a_placement_cannot_read_is_one_line_naming_it(built):
    from aiprim.primitives.sharder._trace import PlacementError

    prim, tables, _, _, runtime = built
    items, shards = tables["items"].head(20), tables["shards"]
    with pytest.raises(PlacementError, match="^items: missing columns table, size_bytes$"):
        runtime.place(items.drop(columns=["table", "size_bytes"]), shards)
    with pytest.raises(PlacementError, match="^shards: missing column shard_id$"):
        runtime.place(items, shards.rename(columns={"shard_id": "shard"}))
    with pytest.raises(PlacementError, match=r"^shards: shard_id of row 1 's1' is not an integer \(shards are numbered\)$"):
        runtime.place(items, pd.DataFrame({"shard_id": ["0", "s1"]}))
    with pytest.raises(PlacementError, match="^shards: shard_id of row 0 is missing$"):
        runtime.place(items, pd.DataFrame({"shard_id": [None, 1]}))


def test_hashed_gumbel_max_samples_the_softmax():
    from aiprim.primitives.sharder._hashing import gumbel_argmax, item_keys, shard_hashes

    keys = item_keys(np.array([f"row-{i}" for i in range(60_000)], dtype=object))
    logits = np.log(np.array([[1.0, 2.0, 3.0]], dtype=np.float32))
    share = np.bincount(gumbel_argmax(keys, shard_hashes([7, 8, 9]), logits), minlength=3) / len(keys)
    np.testing.assert_allclose(share, [1 / 6, 2 / 6, 3 / 6], atol=0.01)


def test_packing_keeps_every_shard_within_its_budget():
    from aiprim.primitives.sharder._packing import pack_groups

    rng = np.random.default_rng(0)
    share = np.array([0.5, 0.25, 0.25])
    accesses = rng.pareto(3.0, 2000) + 0.1
    # One resource: first fit by preference never passes the budget while small groups remain.
    shard = pack_groups(rng.random((2000, 3)), accesses, accesses, share, slack=0.03)
    assert (np.bincount(shard, weights=accesses, minlength=3) / accesses.sum() <= 1.03 * share + 1e-9).all()
    # Two unrelated resources: greedy packing overfills one shard's bytes and another's accesses; the
    # repair pass's moves and swaps bring both back within the budget.
    size = rng.uniform(1, 2, 2000)
    shard = pack_groups(rng.random((2000, 3)), accesses, size, share, slack=0.03)
    for load in (accesses, size):
        assert (np.bincount(shard, weights=load, minlength=3) / load.sum() <= 1.03 * share + 1e-9).all()


def test_rows_of_one_key_value_share_their_placement_key():
    from aiprim.primitives.sharder._features import placement_keys

    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "attr_warehouse": pd.array([1, 1, 2, None], dtype="Int64")})
    keys = placement_keys(items, "attr_warehouse")
    assert keys[0] == keys[1] != keys[2]
    assert keys[3] not in keys[:3]  # no value: the row is keyed by its own id
    as_float = placement_keys(items.astype({"attr_warehouse": "float64"}), "attr_warehouse")
    np.testing.assert_array_equal(as_float, keys)  # MLflow hands nullable integers over as floats


def test_a_key_column_is_eligible_while_its_largest_group_fits_on_one_shard():
    from aiprim.primitives.sharder._model import _choose_key_column

    # 5 warehouses of 20% each and a finer column; 4 shards, one with 32% of the capacity.
    items = pd.DataFrame({"attr_warehouse": np.repeat(np.arange(5), 20), "attr_district": np.repeat(np.arange(50), 2)})
    scores = {"attr_warehouse": 0.9, "attr_district": 0.3}
    uneven = np.array([0.27, 0.20, 0.32, 0.21])
    assert _choose_key_column(items, scores, uneven, 0.03, min_score=0.15) == "attr_warehouse"
    # Four equal shards of 25% also fit a 20% warehouse; eight of 12.5% do not, so the finer column is chosen.
    assert _choose_key_column(items, scores, np.full(4, 0.25), 0.03, min_score=0.15) == "attr_warehouse"
    assert _choose_key_column(items, scores, np.full(8, 0.125), 0.03, min_score=0.15) == "attr_district"
    # Below min_score nothing keys placement.
    assert _choose_key_column(items, scores, np.full(8, 0.125), 0.03, min_score=0.5) is None
