"""Behavioural tests of the learned balancer (Made-With-ML style): invariances
and directional expectations that any good router must meet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aiprim.primitives.balancer._metrics import peak_to_mean, violation_rates
from aiprim.primitives.balancer._peers import PEERS


@pytest.fixture(scope="module")
def setup(trained_balancer, balancer_tables):
    runtime, held_out = trained_balancer
    return runtime, held_out["requests"], balancer_tables["servers"]


def _rename(requests, servers, salt: str = ""):
    """Same fleet and traffic under different names: ids are arbitrary labels."""
    servers = servers.assign(server_id=f"node{salt}-" + servers["server_id"].str[::-1])
    requests = requests.assign(key=f"user{salt}/" + requests["key"] + "/x")
    return requests, servers


def test_the_policy_does_not_depend_on_names(setup):
    """The learned policy (the softmax over servers, before hashing) sees classes and capacities only."""
    runtime, requests, servers = setup
    r2, s2 = _rename(requests, servers)
    assert runtime.expected_peak_to_mean(r2, s2) == pytest.approx(runtime.expected_peak_to_mean(requests, servers), rel=1e-9)


def test_quality_does_not_depend_on_names(setup):
    runtime, requests, servers = setup
    before = peak_to_mean(requests, servers, runtime.route(requests, servers))
    # Placement changes with the names (the hash changes), quality must not beyond hash noise. One renaming
    # of a 24-server fleet moves peak_to_mean by up to ~25% either way, so compare the median of several.
    after = np.median([peak_to_mean(r2, s2, runtime.route(r2, s2))
                       for r2, s2 in (_rename(requests, servers, str(i)) for i in range(5))])
    assert after == pytest.approx(before, rel=0.15)


def test_learned_beats_every_classical_peer(setup):
    runtime, requests, servers = setup
    learned = peak_to_mean(requests, servers, runtime.route(requests, servers))
    for name, make in PEERS.items():
        assert learned < peak_to_mean(requests, servers, make().route(requests, servers)), name


def test_rules_hold_by_construction(setup):
    runtime, requests, servers = setup
    rates = violation_rates(requests, servers, runtime.route(requests, servers))
    assert rates == {"affinity_violation_rate": 0.0, "anti_affinity_violation_rate": 0.0, "class_violation_rate": 0.0}


def test_routing_is_deterministic_and_consistent_across_batches(setup):
    runtime, requests, servers = setup
    whole = runtime.route(requests, servers)
    plain = requests["affinity_group"].isna().to_numpy() & requests["anti_affinity_group"].isna().to_numpy()
    half = requests.iloc[::2]
    np.testing.assert_array_equal(runtime.route(half, servers)[plain[::2]], whole[::2][plain[::2]])
    keys = pd.Series(whole[plain]).groupby(requests["key"].to_numpy()[plain]).nunique()
    assert (keys == 1).all(), "one key always goes to one server"


def test_removing_a_server_moves_only_its_keys(setup):
    runtime, requests, servers = setup
    plain = (requests["affinity_group"].isna() & requests["anti_affinity_group"].isna()).to_numpy()
    requests = requests[plain]
    before = runtime.route(requests, servers)
    victim = pd.Series(before).value_counts().index[0]
    after = runtime.route(requests, servers[servers["server_id"] != victim])
    moved = before != after
    assert moved.any()
    assert (before[moved] == victim).all(), "only the removed server's keys move"
    assert (after[before == victim] != victim).all()


def test_adding_a_server_takes_roughly_its_share(setup):
    runtime, requests, servers = setup
    plain = (requests["affinity_group"].isna() & requests["anti_affinity_group"].isna() & requests["requires_class"].isna()).to_numpy()
    requests = requests[plain]
    before = runtime.route(requests, servers)
    # a copy of the median server, under a new name
    load = pd.Series(before).value_counts()
    original = load.index[len(load) // 2]
    grown = pd.concat([servers, servers[servers["server_id"] == original].assign(server_id="newcomer")], ignore_index=True)
    after = runtime.route(requests, grown)
    moved = before != after
    assert (after[moved] == "newcomer").all(), "keys move only onto the new server"
    # Its share is the original's, not the fleet's median: servers of another class carry other shares
    # (a storage server at the median position carries 0.026 of the requests where the median is 0.038).
    share, originals = moved.mean(), float((before == original).mean())
    assert 0.5 * originals < share < 2.0 * originals


def test_unknown_request_and_server_classes_are_served(setup):
    runtime, requests, servers = setup
    requests = requests.assign(request_class=np.where(np.arange(len(requests)) % 7 == 0, "brand-new", requests["request_class"]))
    servers = servers.assign(server_class=np.where(servers["server_class"] == "general", "general-v2", servers["server_class"]))
    routed = runtime.route(requests, servers)
    assert set(routed) <= set(servers["server_id"])
    assert violation_rates(requests, servers, routed)["class_violation_rate"] == 0.0


def test_a_required_class_missing_from_the_fleet_is_a_clear_error(setup):
    from aiprim.primitives.balancer._fleet import RoutingError

    runtime, requests, servers = setup
    with pytest.raises(RoutingError, match="requires_class 'gpu' matches no server"):
        runtime.route(requests, servers[servers["server_class"] != "gpu"])


def test_a_batch_routes_without_costs_and_a_missing_column_is_named(setup):
    from aiprim.primitives.balancer._fleet import COST_COLUMNS, RoutingError

    runtime, requests, servers = setup
    # A request's cost is known after it ran: routing reads keys and classes only.
    np.testing.assert_array_equal(runtime.route(requests.drop(columns=list(COST_COLUMNS)), servers),
                                  runtime.route(requests, servers))
    with pytest.raises(RoutingError, match="^requests: missing column request_class$"):
        runtime.route(requests.drop(columns=["request_class"]), servers)
    with pytest.raises(RoutingError, match="^requests: missing columns cost_mem, cost_io$"):
        runtime.route(requests.drop(columns=["cost_mem", "cost_io"]), servers)
    with pytest.raises(RoutingError, match="^servers: missing columns zone, cap_cpu$"):
        runtime.route(requests, servers.drop(columns=["cap_cpu", "zone"]))


def test_hot_unit_table_pins_hot_keys_and_stays_consistent(balancer_tables):
    """The exported table pins the hottest keys; removing a pinned server moves only its keys."""
    import tempfile

    from aiprim import primitives

    prim = primitives.get("balancer")
    train, held_out = prim.split(balancer_tables, 0.2)
    runtime = prim.train_runtime(train, {"max_epochs": 2, "scenarios_per_epoch": 4, "hot_units": 100}, tempfile.mkdtemp())
    assert len(runtime.hot_units) == 100
    requests, servers = held_out["requests"], held_out["servers"]
    routed = runtime.route(requests, servers)
    from aiprim.primitives.balancer._fleet import Units

    table = dict(zip(runtime.hot_units, runtime.hot_servers))
    request_hash = pd.Series(Units.from_frame(requests).unit_hash[Units.from_frame(requests).request_unit])
    plain = requests["affinity_group"].isna() & requests["anti_affinity_group"].isna()
    pinned = (plain & request_hash.isin(table).to_numpy()).to_numpy()
    assert pinned.any()
    expected = request_hash[pinned].map(table).to_numpy()
    np.testing.assert_array_equal(routed[pinned], expected)

    victim = pd.Series(expected).value_counts().index[0]
    after = runtime.route(requests, servers[servers["server_id"] != victim])
    moved = (routed != after) & plain.to_numpy()  # replicas of a group may re-pair; plain keys may not
    assert moved.any() and (routed[moved] == victim).all()
    assert violation_rates(requests, servers, routed)["class_violation_rate"] == 0.0
