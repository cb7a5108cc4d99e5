"""The experience window: training reads the training part of every accepted snapshot of the same
deployment, newest last, within the configured rounds and rows; held-out rows never leak in."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aiprim import primitives
from aiprim.primitives._snapshot import write_snapshot


def _query_tables(seed: int, n: int = 40) -> dict:
    rng = np.random.default_rng(seed)
    queries = pd.DataFrame({"query_id": [f"q{i:03d}" for i in range(n)],
                            "template": [f"t{i % 4}" for i in range(n)],
                            "sql": [f"SELECT count(*) FROM t{i % 4} x WHERE x.a = {int(rng.integers(100))}" for i in range(n)]})
    executions = pd.DataFrame({"query_id": queries["query_id"], "arm": np.zeros(n, np.int32), "plan": "{}",
                               "latency_ms": rng.uniform(1, 10, n), "timed_out": False, "rows": pd.array([1] * n, "Int64"),
                               "ts": np.arange(n, dtype=float)})
    arms = pd.DataFrame({"arm": np.array([0], np.int32), "name": ["native"], "settings": ["[]"]})
    return {"queries": queries, "arms": arms, "executions": executions}


@pytest.fixture
def cfg(project, tmp_path):
    from aiprim.flows import config

    loaded = config.load()
    loaded["experience"] = {"rounds": 3, "max_rows": None, "max_age_days": 30}
    return loaded


def _accept(cfg, tmp_path, seed: int, database: str = "db-a") -> str:
    from aiprim.flows import experience

    prim = primitives.get("query")
    directory = write_snapshot("query", prim.schema, _query_tables(seed), tmp_path / "snaps", "tests",
                               {"engine": "duckdb", "database_uri": database})
    experience.record_accepted("query", directory, {}, cfg)
    return str(directory)


def test_the_window_holds_the_newest_rounds_of_the_same_deployment(cfg, tmp_path):
    from aiprim.flows import experience

    prim = primitives.get("query")
    first = _accept(cfg, tmp_path, 1)
    other_db = _accept(cfg, tmp_path, 2, database="db-b")
    second, third, fourth = (_accept(cfg, tmp_path, s) for s in (3, 4, 5))
    window = experience.window(prim, fourth, cfg)
    assert window.snapshots == (second, third, fourth), "3 rounds, oldest first, never another database's"
    assert first not in window.snapshots and other_db not in window.snapshots
    assert experience.round_number("query", cfg) == 5
    # Evaluating an older snapshot never trains on what was accepted after it.
    assert experience.window(prim, second, cfg).snapshots == (first, second)


def test_a_folder_refilled_since_it_was_accepted_leaves_the_window(cfg, tmp_path):
    """A DVC stage keeps its snapshot at one path; once refilled (another source, a snapshot that then fails
    validation), the history's entry for that path no longer describes what the folder holds."""
    import shutil

    from aiprim.flows import experience

    prim = primitives.get("query")

    def written(seed):
        return write_snapshot("query", prim.schema, _query_tables(seed), tmp_path / "elsewhere", "tests",
                              {"engine": "duckdb", "database_uri": "db-a"})

    stage = tmp_path / "dvc" / "snapshot"
    shutil.copytree(written(1), stage)
    experience.record_accepted("query", stage, {}, cfg)
    newest = _accept(cfg, tmp_path, 2)
    assert experience.window(prim, newest, cfg).snapshots == (str(stage), newest)
    shutil.rmtree(stage)
    shutil.copytree(written(3), stage)  # the next experiment's snapshot, not accepted
    assert experience.window(prim, newest, cfg).snapshots == (newest,)

    # The same tables accepted at two paths (a stage's folder and the store) count once.
    shutil.rmtree(stage)
    shutil.copytree(_accept(cfg, tmp_path, 4), stage)
    experience.record_accepted("query", stage, {}, cfg)
    latest = _accept(cfg, tmp_path, 5)
    assert experience.window(prim, latest, cfg).snapshots == (newest, str(stage), latest)


def test_training_merges_training_parts_and_keeps_the_newest_held_out_part(cfg, tmp_path):
    from aiprim.flows import experience

    prim = primitives.get("query")
    older, newest = _accept(cfg, tmp_path, 1), _accept(cfg, tmp_path, 2)
    train, held_out, window = experience.training_tables(prim, newest, cfg)
    own_train, own_held = prim.split(_query_tables(2), 0.2)
    old_train, _ = prim.split(_query_tables(1), 0.2)
    assert len(train["queries"]) == len(own_train["queries"]) + len(old_train["queries"])
    assert train["queries"]["query_id"].is_unique, "older rounds' ids are prefixed with their snapshot id"
    assert set(train["executions"]["query_id"]) == set(train["queries"]["query_id"])
    assert held_out["queries"]["query_id"].tolist() == own_held["queries"]["query_id"].tolist()
    # No held-out template of either round is trained on.
    assert not set(train["queries"]["template"]) & set(held_out["queries"].query("split == 'unseen_templates'")["template"])


def test_max_rows_drops_the_oldest_rounds(cfg, tmp_path):
    from aiprim.flows import experience

    prim = primitives.get("query")
    snapshots = [_accept(cfg, tmp_path, s) for s in (1, 2, 3)]
    cfg["experience"]["max_rows"] = 80  # two snapshots of 40 rows
    assert experience.window(prim, snapshots[-1], cfg).snapshots == tuple(snapshots[1:])
    cfg["experience"]["rounds"] = 1
    assert experience.window(prim, snapshots[-1], cfg).snapshots == (snapshots[-1],)


def test_a_history_written_before_windows_existed_still_reads(cfg, tmp_path):
    from aiprim.flows import experience

    only = _accept(cfg, tmp_path, 1)
    experience.history_file("query", cfg).write_text(json.dumps({"snapshot": only, "stats": {}}))
    assert [e["snapshot"] for e in experience.history("query", cfg)] == [only]


def _sharder_round(seed: int) -> dict:
    prim = primitives.get("sharder")
    tables = prim.generate({"workload": "social", "users": 300, "products": 80, "initial_reviews": 400,
                            "communities": 6, "transactions": 1500, "shards": 3, "layout_seed": 0}, seed)[0]
    return prim.split(tables, 0.2)[0]


def test_the_sharder_joins_its_rounds_into_one_trace_of_the_rows_that_are_still_there():
    prim = primitives.get("sharder")
    older, newest = _sharder_round(1), _sharder_round(2)
    merged = prim.merge_experience([("aaaaaaaa11", older), ("bbbbbbbb22", newest)])
    assert merged["items"] is newest["items"] and merged["shards"] is newest["shards"]
    accesses = merged["accesses"]
    from_older = accesses["txn_id"].str.startswith("aaaaaaaa/")
    assert from_older.any() and (accesses.loc[~from_older, "txn_id"].to_numpy() == newest["accesses"]["txn_id"].to_numpy()).all()
    assert accesses.loc[from_older, "ts"].max() < accesses.loc[~from_older, "ts"].min(), "older transactions come first"
    assert accesses["ts"].min() == 0.0
    # A row is the same row only with the same id, table and attributes: reviews inserted by each round reuse
    # ids, by other authors, and the older round's are dropped.
    same = older["items"].merge(newest["items"], on=["item_id", "table", "attr_user", "attr_product"])["item_id"]
    kept = set(accesses.loc[from_older, "item_id"])
    assert kept <= set(same) and len(kept) > 0.8 * len(set(older["accesses"]["item_id"]) & set(same))
    reused = set(older["items"]["item_id"]) & set(newest["items"]["item_id"]) - set(same)
    assert reused and not kept & reused
    assert prim.merge_experience([("bbbbbbbb22", newest)]) is newest


def test_the_balancer_joins_its_rounds_into_one_trace_with_a_hot_unit_table_per_round():
    from aiprim.primitives.balancer import WINDOW_PART
    from aiprim.primitives.balancer._source import DEFAULTS, generate

    prim = primitives.get("balancer")
    source = {**DEFAULTS, "servers": 12, "requests": 3000, "keys": 600, "zipf_offset": 50, "population_seed": 4,
              "anti_affinity_share": 0.1}
    older, newest = generate(source, seed=1), generate(source, seed=2)
    gone = newest["servers"]["server_class"].iloc[0]  # a class the newest fleet no longer has
    newest = {**newest, "servers": newest["servers"][newest["servers"]["server_class"] != gone]}
    newest["requests"] = newest["requests"][newest["requests"]["requires_class"].fillna("") != gone]
    merged = prim.merge_experience([("aaaaaaaa11", older), ("bbbbbbbb22", newest)])
    assert merged["servers"] is newest["servers"]
    requests = merged["requests"]
    from_older = requests[WINDOW_PART] == 0
    assert from_older.any() and (requests.loc[~from_older, "key"].to_numpy() == newest["requests"]["key"].to_numpy()).all()
    assert requests.loc[from_older, "ts"].max() < requests.loc[~from_older, "ts"].min(), "older requests come first"
    assert (requests.loc[~from_older, "ts"].to_numpy() == newest["requests"]["ts"].to_numpy()).all()
    groups = requests.loc[from_older, "anti_affinity_group"].dropna()
    assert len(groups) and groups.str.startswith("aaaaaaaa/").all(), "a replica set's id is its round's"
    assert gone not in set(requests.loc[from_older, "requires_class"].dropna())
    assert set(requests.loc[from_older, "key"]) & set(newest["requests"]["key"]), "keys keep their names"
    datamodule = prim.build_datamodule(merged, prim.params({"hot_units": 50}), 0)
    assert datamodule.hot_units == 100
    assert prim.merge_experience([("bbbbbbbb22", newest)]) is newest


def _accept_many(args) -> None:
    cfg, root, worker = args
    from aiprim.flows import experience

    for i in range(25):
        experience.record_accepted("query", root / f"w{worker}-{i}", {}, cfg)


def test_rounds_accepting_at_once_lose_no_snapshot_and_readers_never_see_half_a_file(cfg, tmp_path):
    """Rounds that run at once (a Dask or Ray runner, several `aiprim run`s) each append to the history."""
    import multiprocessing

    from aiprim.flows import experience

    context = multiprocessing.get_context("fork")
    with context.Pool(3) as pool:
        pending = pool.map_async(_accept_many, [(cfg, tmp_path, w) for w in range(3)])
        while not pending.ready():
            experience.history("query", cfg)  # raised JSONDecodeError on a half-written file
            experience.drift_reference("query", tmp_path / "elsewhere", cfg)
        pending.get()
    recorded = {e["snapshot"] for e in experience.history("query", cfg)}
    assert recorded == {str(tmp_path / f"w{w}-{i}") for w in range(3) for i in range(25)}
