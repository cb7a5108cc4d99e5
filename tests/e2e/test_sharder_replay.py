"""The sharder's live replay: held-out transactions on real PostgreSQL shards, two-phase commit where a
transaction spans shards (skipped where no PostgreSQL server binaries are installed)."""

from __future__ import annotations

import json

import pytest

SOURCE = {"workload": "tpcc", "warehouses": 6, "customers_per_district": 5, "catalogue_items": 40,
          "transactions": 2500, "shards": 3}


@pytest.fixture(scope="module")
def snapshot_and_runtime(tmp_path_factory):
    from aiprim import primitives
    from aiprim.primitives._snapshot import write_snapshot

    prim = primitives.get("sharder")
    tables, _ = prim.generate(SOURCE, seed=4)
    root = tmp_path_factory.mktemp("replay")
    snapshot = write_snapshot("sharder", prim.schema, tables, root, "tests")
    train, _ = prim.split(tables, 0.2)
    prim.train_runtime(train, {"max_epochs": 1, "steps_per_epoch": 3, "txns_per_step": 512}, root / "runtime")
    return snapshot, root / "runtime"


@pytest.mark.slow
def test_replay_commits_every_transaction_and_fewer_need_two_phase_commit(snapshot_and_runtime, capsys):
    from aiprim.primitives.query._postgres import PostgresUnavailable, server_binaries

    try:
        server_binaries()
    except PostgresUnavailable as error:
        pytest.skip(str(error))
    from aiprim.flows.cli import main

    snapshot, runtime = snapshot_and_runtime
    code = main(["replay", "--snapshot", str(snapshot), "--runtime", str(runtime), "--transactions", "150",
                 "--peers", "hash", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])["placements"]
    assert set(result) == {"learned", "hash"}
    assert all(m["transactions"] == 150 for m in result.values())
    assert result["learned"]["distributed_share"] < 0.5 * result["hash"]["distributed_share"]


def test_replay_and_evaluate_name_a_wrong_snapshot_in_one_line(snapshot_and_runtime, tmp_path, capsys):
    from aiprim.flows.cli import main

    snapshot, runtime = snapshot_and_runtime
    other = tmp_path / "balancer-snapshot"
    other.mkdir()
    (other / "manifest.json").write_text('{"primitive": "balancer"}')
    cases = {("replay", "--snapshot", str(snapshot), "--runtime", str(runtime), "--transactions", "0"): "--transactions: at least 1, not 0",
             ("replay", "--snapshot", str(tmp_path / "nowhere"), "--runtime", str(runtime)): "not a directory",
             ("replay", "--snapshot", str(other), "--runtime", str(runtime)): "a balancer snapshot, not one of sharder",
             ("evaluate", "sharder", "--snapshot", str(other), "--model", "none"): "a balancer snapshot, not one of sharder"}
    for argv, message in cases.items():
        assert main(list(argv)) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("aiprim: error: ") and message in err[0], (argv, err)
