"""Behavioural tests of the learned sharder (Made-With-ML style): invariances and directional
expectations that any good placement must meet, on a small TPC-C-like snapshot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aiprim.primitives.sharder._metrics import evaluate_placers
from aiprim.primitives.sharder._peers import HashPeer

SOURCE = {"workload": "tpcc", "warehouses": 8, "customers_per_district": 8, "catalogue_items": 80,
          "transactions": 6000, "shards": 4}
PARAMS = {"max_epochs": 3, "steps_per_epoch": 6, "txns_per_step": 1024}


def _train(tables, tmp_path_factory, name: str):
    from aiprim import primitives

    prim = primitives.get("sharder")
    train, held_out = prim.split(tables, 0.2)
    runtime = prim.train_runtime(train, PARAMS, tmp_path_factory.mktemp(name), seed=0)
    return runtime, train, held_out


@pytest.fixture(scope="module")
def tables():
    from aiprim import primitives

    return primitives.get("sharder").generate(SOURCE, seed=5)[0]


@pytest.fixture(scope="module")
def trained(tables, tmp_path_factory):
    return _train(tables, tmp_path_factory, "sharder")


def _scores(runtime, held_out, train) -> dict:
    return evaluate_placers({"learned": runtime, "hash": HashPeer()}, held_out, train, disruption_trials=0,
                            reshard_budget=None)


def _renamed(tables: dict) -> dict:
    """The same database under other names: item ids are opaque labels, shard ids arbitrary numbers."""
    rename = {i: f"row-{i[::-1]}" for i in tables["items"]["item_id"]}
    shard = {s: 100 + 7 * int(s) for s in tables["shards"]["shard_id"]}
    items = tables["items"].assign(item_id=tables["items"]["item_id"].map(rename),
                                   current_shard=pd.array(tables["items"]["current_shard"].map(shard), dtype="Int32"))
    shards = tables["shards"].assign(shard_id=tables["shards"]["shard_id"].map(shard).astype(np.int32))
    accesses = tables["accesses"].assign(item_id=tables["accesses"]["item_id"].map(rename))
    return {"shards": shards, "items": items, "accesses": accesses}


def test_quality_does_not_depend_on_names(tables, trained, tmp_path_factory):
    runtime, train, held_out = trained
    before = _scores(runtime, held_out, train)["learned"]
    again, train2, held2 = _train(_renamed(tables), tmp_path_factory, "renamed")
    after = _scores(again, held2, train2)["learned"]
    assert after["distributed_txn_rate"] == pytest.approx(before["distributed_txn_rate"], abs=0.02)
    assert after["peak_to_mean_load"] == pytest.approx(before["peak_to_mean_load"], abs=0.1)


def test_learned_placement_beats_hashing_by_far(trained):
    runtime, train, held_out = trained
    scores = _scores(runtime, held_out, train)
    assert scores["learned"]["distributed_txn_rate"] < 0.3 * scores["hash"]["distributed_txn_rate"]
    assert scores["learned"]["peak_to_mean_load"] <= 1.25


def test_a_new_row_lands_with_its_warehouse(trained, tables):
    runtime, _, _ = trained
    items, shards = tables["items"], tables["shards"]
    placed = pd.Series(runtime.place(items, shards), index=items["item_id"])
    for warehouse in range(SOURCE["warehouses"]):
        new = pd.DataFrame({"item_id": [f"order/{warehouse:04d}/03/9999999", f"brand-new-{warehouse}"], "table": ["order"] * 2,
                            "size_bytes": [600, 600], "attr_warehouse": pd.array([warehouse] * 2, dtype="Int64"),
                            "attr_district": pd.array([3, 3], dtype="Int64")})
        where = runtime.place(new, shards)
        assert (where == placed[f"warehouse/{warehouse:04d}"]).all(), warehouse


def test_placement_is_deterministic_and_row_by_row(trained, tables):
    runtime, _, _ = trained
    items, shards = tables["items"], tables["shards"]
    whole = runtime.place(items, shards)
    np.testing.assert_array_equal(runtime.place(items, shards), whole)
    some = np.random.default_rng(0).choice(len(items), 500, replace=False)
    np.testing.assert_array_equal(runtime.place(items.iloc[some], shards), whole[some])


def test_adding_a_shard_moves_about_its_share_and_only_to_it(trained, tables):
    runtime, _, _ = trained
    items, shards = tables["items"], tables["shards"]
    before = runtime.place(items, shards)
    k = len(shards)
    moved = []
    for t in range(20):
        grown = pd.concat([shards, pd.DataFrame({"shard_id": pd.array([50 + t], dtype="int32"), "capacity": [1.0]})],
                          ignore_index=True)
        after = runtime.place(items, grown)
        changed = after != before
        assert (after[changed] == 50 + t).all(), "a row only ever moves to the new shard"
        moved.append(changed.mean())
    assert np.mean(moved) == pytest.approx(1 / (k + 1), abs=0.08)


def test_removing_a_shard_moves_only_its_rows(trained, tables):
    runtime, _, _ = trained
    items, shards = tables["items"], tables["shards"]
    before = runtime.place(items, shards)
    victim = int(shards["shard_id"].iloc[1])
    after = runtime.place(items, shards[shards["shard_id"] != victim])
    changed = after != before
    assert changed.any()
    assert (before[changed] == victim).all()
    assert (after != victim).all()


@pytest.mark.parametrize("budget", [0.0, 0.02, 0.1, 0.3, 1.0])
def test_resharding_never_exceeds_its_budget(trained, tables, budget):
    runtime, _, _ = trained
    items, shards = tables["items"], tables["shards"]
    resharded = runtime.reshard(items, shards, budget)
    current = items["current_shard"].to_numpy(dtype=np.int64)
    size = items["size_bytes"].to_numpy(dtype=np.float64)
    assert size[resharded != current].sum() <= budget * size.sum() + 1e-6
    if budget == 1.0:  # everything may move: the learned placement itself
        np.testing.assert_array_equal(resharded, runtime.place(items, shards))


def test_a_bigger_budget_never_makes_the_placement_worse(trained):
    runtime, train, held_out = trained
    rates = [evaluate_placers({"learned": runtime}, held_out, train, disruption_trials=0, reshard_budget=b)["learned"]
             ["resharded_distributed_txn_rate"] for b in (0.0, 0.3, 1.0)]
    assert rates[0] >= rates[1] >= rates[2]


def test_steps_that_worsen_the_validation_trace_are_not_exported(tmp_path):
    # A drawn social deployment of about 8,000 transactions on 8 shards, where the balance term takes over the
    # gradient steps: after one epoch 0.97 of the validation transactions span shards, before it 0.73. The
    # graph start is off: it wins on this deployment whatever the steps did (the next test), and would hide them.
    from pathlib import Path

    import yaml

    from aiprim import primitives

    prim = primitives.get("sharder")
    tables = prim.transfer_model().draw_deployment(5013, transactions=(6000, 16000))
    train, held_out = prim.split(tables, 0.2)
    params = {**yaml.safe_load((Path(__file__).parents[2] / "configs" / "sharder.yaml").read_text())["train"], "max_epochs": 1,
              "graph_start": False}
    runtime = prim.train_runtime(train, params, tmp_path, seed=0)
    report = runtime.training_report
    assert report["start"] == "model" and report["kept"] == "construction"
    # The packed groups' rate (single rows may then move: ``validation_distributed_rate`` is what ships).
    groups_rate = report.get("validation_distributed_rate_groups", report["validation_distributed_rate"])
    assert groups_rate == report["validation_distributed_rate_construction"]
    assert report["validation_distributed_rate_construction"] < report["validation_distributed_rate_trained"] - 0.1
    scores = _scores(runtime, held_out, train)
    assert scores["learned"]["distributed_txn_rate"] < scores["hash"]["distributed_txn_rate"] - 0.1


def test_a_graph_partition_starts_the_export_where_it_splits_far_fewer_transactions(tmp_path):
    # The same deployment: the kernel's clusters, packed and refined, leave 0.63 of the training transactions
    # distributed; a METIS partition of the same groups, packed and refined alike, 0.27. Schism reaches 0.40
    # on the held-out trace.
    from pathlib import Path

    import yaml

    from aiprim import primitives
    from aiprim.primitives.sharder._peers import SchismPeer

    prim = primitives.get("sharder")
    tables = prim.transfer_model().draw_deployment(5013, transactions=(6000, 16000))
    train, held_out = prim.split(tables, 0.2)
    params = {**yaml.safe_load((Path(__file__).parents[2] / "configs" / "sharder.yaml").read_text())["train"], "max_epochs": 1}
    runtime = prim.train_runtime(train, params, tmp_path, seed=0)
    assert runtime.training_report["start"] == "graph"
    scores = evaluate_placers({"learned": runtime, "schism": SchismPeer(train)}, held_out, train, disruption_trials=0,
                              reshard_budget=None)
    assert scores["learned"]["distributed_txn_rate"] < scores["schism"]["distributed_txn_rate"]
    # Rows of keys never seen are placed by the kernel, chosen by its own placement (the construction's here, the
    # steps' collapsed onto one shard); the held-out load stays inside the promotion guardrail.
    assert scores["learned"]["peak_to_mean_load"] <= 1.25


@pytest.fixture(scope="module")
def social_built(tmp_path_factory):
    """A drawn social deployment (users keyed by an attribute that only partly follows their communities),
    built by the construction with knobs the transfer decodes for it, with and without single-row moves."""
    from aiprim import primitives
    from aiprim.primitives.sharder import _transfer

    prim = primitives.get("sharder")
    tables = prim.transfer_model().draw_deployment(5014, transactions=(6000, 16000))
    train, held_out = prim.split(tables, 0.2)
    datamodule = _transfer._datamodule(train, 0)
    setting = (8, 0.15, 0.08)
    with_rows = _transfer._build(datamodule, setting, tmp_path_factory.mktemp("rows"), 0)
    datamodule.row_moves = False
    groups_only = _transfer._build(datamodule, setting, tmp_path_factory.mktemp("groups"), 0)
    return with_rows, groups_only, train, held_out


def test_single_rows_leave_their_group_where_the_validation_trace_gains(social_built):
    with_rows, groups_only, train, held_out = social_built
    report = with_rows.training_report
    assert report["row_overrides"] > 0 and len(with_rows.row_hash) == report["row_overrides"]
    assert report["validation_distributed_rate_rows"] <= report["validation_distributed_rate_groups"] - 0.01
    assert groups_only.training_report["row_overrides"] == 0 and not len(groups_only.row_hash)
    scores = evaluate_placers({"rows": with_rows, "groups": groups_only}, held_out, train, disruption_trials=0,
                              reshard_budget=None)
    assert scores["rows"]["distributed_txn_rate"] < scores["groups"]["distributed_txn_rate"] - 0.005
    assert scores["rows"]["peak_to_mean_load"] <= 1.25
    # The rows that moved are placed apart from their groups, by the saved runtime too.
    items, shards = train["items"], train["shards"]
    differs = with_rows.place(items, shards) != groups_only.place(items, shards)
    assert 0 < differs.sum() <= report["row_overrides"]


def test_rows_that_left_their_group_stay_consistent_when_shards_come_and_go(social_built):
    from aiprim.primitives.sharder._hashing import item_keys

    runtime, _, train, _ = social_built
    items, shards = train["items"], train["shards"]
    overridden = np.isin(item_keys(items["item_id"].to_numpy(dtype=object)), runtime.row_hash)
    before = runtime.place(items, shards)
    grown = pd.concat([shards, pd.DataFrame({"shard_id": pd.array([99], dtype="int32"), "capacity": [1.0]})],
                      ignore_index=True)
    after = runtime.place(items, grown)
    changed = after != before
    assert (after[changed] == 99).all()
    assert changed[overridden].mean() == pytest.approx(1 / (len(shards) + 1), abs=0.1)
    victim = int(before[overridden][0])
    after = runtime.place(items, shards[shards["shard_id"] != victim])
    changed = after != before
    assert changed[overridden].any() and (before[changed] == victim).all()


@pytest.mark.parametrize("dropped", [("row_key",), ("row_hash", "row_shard", "row_key")])
def test_a_runtime_saved_without_parts_of_its_row_table_still_loads(social_built, tmp_path, dropped):
    # Models saved before single-row moves have no row table and place by their groups alone; a row table
    # without its groups' keys is still honoured (every row of a known group looks itself up).
    from aiprim import primitives

    runtime, groups_only, train, _ = social_built
    runtime.save(tmp_path)
    path = tmp_path / "sharder_model.npz"
    with np.load(path, allow_pickle=False) as saved:
        kept = {k: saved[k] for k in saved.files if k not in dropped}
    np.savez(path, **kept)
    loaded = primitives.get("sharder").load_runtime(tmp_path)
    items, shards = train["items"], train["shards"]
    expected = groups_only if "row_hash" in dropped else runtime
    np.testing.assert_array_equal(loaded.place(items, shards), expected.place(items, shards))


def test_rounds_of_the_same_database_make_the_placement_better(tmp_path):
    # Three rounds of one social deployment (the same communities and database, a new trace each round): the
    # sharder trained on the window of the three splits far fewer of the newest round's held-out transactions
    # than the one trained on that round alone (0.19 vs 0.29 when written).
    from aiprim import primitives

    prim = primitives.get("sharder")
    source = {"workload": "social", "users": 2000, "products": 600, "initial_reviews": 4000, "communities": 12,
              "transactions": 12000, "shards": 4, "layout_seed": 0}
    parts = []
    for round_number in range(3):
        train, held_out = prim.split(prim.generate(source, round_number)[0], 0.2)
        parts.append((f"round{round_number}-snapshot", train))
    alone = prim.train_runtime(parts[-1][1], PARAMS, tmp_path / "alone", seed=0)
    window = prim.train_runtime(prim.merge_experience(parts), PARAMS, tmp_path / "window", seed=0)
    rate = {name: _scores(runtime, held_out, parts[-1][1])["learned"]["distributed_txn_rate"]
            for name, runtime in (("alone", alone), ("window", window))}
    assert rate["window"] < rate["alone"] - 0.05, rate
