"""The split LP's routing weights (``_lp.SplitWeights``): the LP-weighted rendezvous peer and the learned
runtime's policy for the request classes its training telemetry covers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aiprim.primitives.balancer._fleet import Fleet, Units
from aiprim.primitives.balancer._hot import expected_load
from aiprim.primitives.balancer._lp import SplitWeights
from aiprim.primitives.balancer._metrics import load_peak_to_mean, peak_to_mean, peak_to_mean_lower_bound
from aiprim.primitives.balancer._peers import LPWeightedRendezvousRouter, WeightedRendezvousRouter
from tests.unit.frames import make_requests, make_servers


def _skewed_fleet_batch(n_keys: int = 3000):
    """Three request classes of different shapes on a fleet whose servers differ in shape: capacity weights
    alone cannot balance it, a split by class can."""
    caps = [[4, 1, 1], [4, 1, 1], [1, 4, 1], [1, 4, 1], [1, 1, 4], [2, 2, 2]]
    servers = make_servers(classes=["cpu", "cpu", "mem", "mem", "io", "general"], caps=caps)
    rng = np.random.default_rng(0)
    cls = rng.choice(["c", "m", "i"], size=n_keys, p=[0.5, 0.3, 0.2])
    shape = {"c": [3.0, 0.5, 0.5], "m": [0.5, 3.0, 0.5], "i": [0.5, 0.5, 3.0]}
    requests = make_requests([f"k{i}" for i in range(n_keys)], costs=[shape[c] for c in cls])
    return requests.assign(request_class=cls), servers


def test_the_split_reaches_the_lp_optimum_in_expectation():
    requests, servers = _skewed_fleet_batch()
    units, fleet = Units.from_frame(requests), Fleet.from_frame(servers)
    split = SplitWeights.fit(units, fleet)
    expected = load_peak_to_mean(expected_load(split.logits(fleet), split.group_index(units), units, fleet,
                                               np.ones(len(units), dtype=bool)), fleet.capacity)
    bound = peak_to_mean_lower_bound(requests, servers)
    assert expected == pytest.approx(bound, rel=0.02), (expected, bound)
    capacity_only = peak_to_mean(requests, servers, WeightedRendezvousRouter().route(requests, servers))
    learned_split = peak_to_mean(requests, servers, LPWeightedRendezvousRouter().route(requests, servers))
    assert learned_split < 0.8 * capacity_only, (learned_split, capacity_only)


def test_weights_follow_server_types_not_names():
    requests, servers = _skewed_fleet_batch(600)
    units, fleet = Units.from_frame(requests), Fleet.from_frame(servers)
    split = SplitWeights.fit(units, fleet)
    renamed = Fleet.from_frame(servers.assign(server_id="node-" + servers["server_id"]))
    np.testing.assert_array_equal(split.logits(fleet), split.logits(renamed))
    # Removing a server leaves every other server's weight as it was: hashing then moves only its units.
    smaller = Fleet.from_frame(servers.iloc[1:])
    np.testing.assert_array_equal(split.logits(fleet)[:, 1:], split.logits(smaller))
    before = LPWeightedRendezvousRouter({"requests": requests, "servers": servers})
    moved = before.route(requests, servers) != before.route(requests, servers.iloc[1:])
    assert (before.route(requests, servers)[moved] == "s0").all()
    # A server of a shape never seen weighs, per unit of capacity, what its class's servers weighed.
    grown = pd.concat([servers, servers.iloc[[0]].assign(server_id="s9", cap_cpu=5.0)], ignore_index=True)
    weights = np.exp(split.logits(Fleet.from_frame(grown)))
    size = lambda row: np.mean(grown.loc[row, ["cap_cpu", "cap_mem", "cap_io"]].to_numpy() / servers[["cap_cpu", "cap_mem", "cap_io"]].sum().to_numpy())  # noqa: E731
    np.testing.assert_allclose(weights[:, 6] / size(6), (weights[:, 0] / size(0) + weights[:, 1] / size(1)) / 2, rtol=1e-5)


def test_a_group_the_fit_never_saw_routes_by_capacity():
    requests, servers = _skewed_fleet_batch(600)
    peer = LPWeightedRendezvousRouter({"requests": requests, "servers": servers})
    fresh = requests.assign(request_class="never-seen")
    np.testing.assert_array_equal(peer.route(fresh, servers), WeightedRendezvousRouter().route(fresh, servers))


def test_the_peer_fits_on_the_training_part_when_given_one():
    requests, servers = _skewed_fleet_batch(1200)
    train, held = requests.iloc[:600], requests.iloc[600:]
    fitted = LPWeightedRendezvousRouter({"requests": train, "servers": servers})
    by_hand = SplitWeights.fit(Units.from_frame(train), Fleet.from_frame(servers))
    fitted.route(held, servers)
    np.testing.assert_array_equal(fitted._split.density, by_hand.density)


def test_a_runtime_with_a_split_saves_and_loads_without_pickles(tmp_path, trained_balancer, balancer_tables):
    from aiprim.primitives.balancer._runtime import WEIGHTS, BalancerRuntime

    runtime, held_out = trained_balancer
    assert runtime.split is not None  # lp_split is on by default
    runtime.save(tmp_path)
    with np.load(tmp_path / WEIGHTS, allow_pickle=False) as arrays:
        assert {"split_density", "split_type_shape", "split_capacity_total"} <= set(arrays.files)
    again = BalancerRuntime.load(tmp_path)
    requests, servers = held_out["requests"], balancer_tables["servers"]
    np.testing.assert_array_equal(again.route(requests, servers), runtime.route(requests, servers))
    # A class the split covers routes by it, not by the kernel.
    row = int(np.flatnonzero(runtime._split_rows >= 0)[0])
    fleet = Fleet.from_frame(servers)
    np.testing.assert_array_equal(runtime.fleet_logits(fleet)[row], runtime.split.logits(fleet)[runtime._split_rows[row]])
    assert isinstance(runtime.request_classes, pd.Index)


def test_a_fleet_the_split_never_saw_is_routed_by_the_kernel(trained_balancer, balancer_tables):
    runtime, _ = trained_balancer
    servers = balancer_tables["servers"]
    fleet = Fleet.from_frame(servers)
    assert runtime.split.known_share(fleet) == 1.0
    # Every server resized: no type the split knows, so every row is the kernel's.
    other = Fleet.from_frame(servers.assign(cap_cpu=servers["cap_cpu"] * 1.3))
    assert runtime.split.known_share(other) == 0.0
    split, runtime.split = runtime.split, None
    try:
        kernel_only = runtime.fleet_logits(other)
    finally:
        runtime.split = split
    np.testing.assert_array_equal(runtime.fleet_logits(other), kernel_only)


def test_on_a_fleet_it_was_not_fitted_to_the_hot_unit_table_stands_aside(tmp_path, balancer_tables):
    from aiprim import primitives

    prim = primitives.get("balancer")
    train, held_out = prim.split(balancer_tables, 0.2)
    runtime = prim.train_runtime(train, {"max_epochs": 1, "scenarios_per_epoch": 2, "hot_units": 50}, tmp_path)
    servers = balancer_tables["servers"]
    units, fleet = Units.from_frame(held_out["requests"]), Fleet.from_frame(servers)
    pinned = np.isin(units.unit_hash, runtime.hot_units.to_numpy())
    assert pinned.any() and runtime.fitted_to(fleet)
    table = dict(zip(runtime.hot_units, runtime.hot_servers))
    chosen = fleet.server_id[runtime.route_units(units, fleet)]
    assert all(chosen[u] == table[units.unit_hash[u]] for u in np.flatnonzero(pinned & (units.anti_group < 0)))
    # The same names on servers of other sizes: another deployment, where the table would pin keys at random.
    other = Fleet.from_frame(servers.assign(cap_mem=servers["cap_mem"] * 1.7))
    assert not runtime.fitted_to(other)
    split, table_units, table_servers = runtime.split, runtime.hot_units, runtime.hot_servers
    runtime.split, runtime.hot_units, runtime.hot_servers = None, pd.Index(np.zeros(0, np.uint64)), np.zeros(0, object)
    try:
        kernel_only = runtime.route_units(units, other)
    finally:
        runtime.split, runtime.hot_units, runtime.hot_servers = split, table_units, table_servers
    np.testing.assert_array_equal(runtime.route_units(units, other), kernel_only)
