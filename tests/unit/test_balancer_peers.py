"""Classical peers of the balancer: each algorithm against its definition, on small hand-made fleets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aiprim.primitives.balancer._fleet import Fleet, Units
from aiprim.primitives.balancer._hashing import hash_strings
from aiprim.primitives.balancer._metrics import violation_rates
from aiprim.primitives.balancer._peers import (
    PEERS,
    BoundedLoadRouter,
    JumpHashRouter,
    MaglevRouter,
    RendezvousRouter,
    WeightedRendezvousRouter,
    capacity_weights,
    jump_hash,
    maglev_table,
)
from aiprim.primitives.balancer._routing import gumbel_scores
from tests.unit.frames import make_requests, make_servers, mixed_batch


def reference_jump_hash(key: int, n_buckets: int) -> int:
    """Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm", verbatim."""
    b, j = -1, 0
    while j < n_buckets:
        b = j
        key = (key * 2862933555777941757 + 1) % 2**64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def test_jump_hash_matches_reference():
    keys = hash_strings(np.array([f"key-{i}" for i in range(2000)], dtype=object))
    keys = np.concatenate([keys, np.array([0, 1, 2**64 - 1], dtype=np.uint64)])
    for n in (1, 2, 7, 100, 1000):
        expected = [reference_jump_hash(int(k), n) for k in keys]
        assert jump_hash(keys, n).tolist() == expected


def test_jump_hash_router_uses_eligible_servers_in_fleet_order():
    servers = make_servers(classes=["general", "gpu", "general", "gpu", "gpu"])
    requests = make_requests([f"k{i}" for i in range(50)], requires=["gpu"] * 50)
    units = Units.from_frame(requests)
    choice = JumpHashRouter().route_units(units, Fleet.from_frame(servers))
    expected = np.array([1, 3, 4])[[reference_jump_hash(int(h), 3) for h in units.unit_hash]]
    assert choice.tolist() == expected.tolist()


def test_maglev_table_is_full_and_even():
    hashes = hash_strings(np.array([f"s{i}" for i in range(7)], dtype=object))
    table = maglev_table(hashes, 65537)
    assert table.shape == (65537,) and table.min() >= 0
    counts = np.bincount(table, minlength=7)
    assert counts.max() - counts.min() <= 1  # round-robin filling: one slot per server per round


def test_maglev_table_changes_little_when_a_server_goes():
    hashes = hash_strings(np.array([f"s{i}" for i in range(20)], dtype=object))
    full = maglev_table(hashes, 65537)
    reduced = np.flatnonzero(np.arange(20) != 5)[maglev_table(hashes[np.arange(20) != 5], 65537)]
    moved_elsewhere = ((full != reduced) & (full != 5)).mean()
    assert moved_elsewhere < 0.02  # Maglev's "minimal disruption" is approximate, not exact


def test_weighted_rendezvous_follows_capacity():
    servers = make_servers(classes=["general"] * 3, caps=[[1, 1, 1], [1, 1, 1], [4, 4, 4]])
    requests = make_requests([f"k{i}" for i in range(12000)])
    counts = pd.Series(WeightedRendezvousRouter().route(requests, servers)).value_counts()
    assert counts["s2"] / 12000 == pytest.approx(4 / 6, abs=0.02)
    np.testing.assert_allclose(capacity_weights(servers[["cap_cpu", "cap_mem", "cap_io"]].to_numpy()), [1 / 6, 1 / 6, 4 / 6])


def test_bounded_load_respects_bounds_for_unit_sized_keys():
    servers = make_servers(classes=["general"] * 10, caps=np.ones((10, 3)))
    requests = make_requests([f"k{i}" for i in range(5000)])
    router = BoundedLoadRouter(epsilon=0.1)
    units = Units.from_frame(requests)
    bound = router.bounds(units, Fleet.from_frame(servers))
    assert (bound == int(np.ceil(1.1 * 500))).all()
    loads = pd.Series(router.route(requests, servers)).value_counts()
    assert loads.max() <= bound[0]


def test_bounded_load_places_a_unit_larger_than_any_bound():
    servers = make_servers(classes=["general"] * 4)
    requests = make_requests(["hot"] * 50 + [f"k{i}" for i in range(50)])
    assigned = BoundedLoadRouter().route(requests, servers)
    assert len(set(assigned[:50])) == 1  # one key, one server, even when it cannot fit the bound


def test_bounded_load_first_come_keys_take_their_ring_server():
    # The first unit in the batch always gets its plain consistent-hashing server.
    servers = make_servers(classes=["general"] * 5)
    requests = make_requests(["first"] + [f"k{i}" for i in range(100)])
    router = BoundedLoadRouter()
    points, owner = router._ring(Fleet.from_frame(servers))
    h = Units.from_frame(requests).unit_hash[0]
    expected = servers["server_id"][owner[np.searchsorted(points, h) % len(points)]]
    assert router.route(requests, servers)[0] == expected


@pytest.mark.parametrize("name", sorted(PEERS))
def test_every_peer_is_deterministic_and_keeps_class_and_affinity(name):
    requests, servers = mixed_batch()
    router = PEERS[name]()
    assert router.name == name
    first = router.route(requests, servers)
    assert first.dtype == object and len(first) == len(requests)
    assert (first == PEERS[name]().route(requests, servers)).all()
    rates = violation_rates(requests, servers, first)
    assert rates["class_violation_rate"] == 0.0
    assert rates["affinity_violation_rate"] == 0.0
    # One key, one server.
    assert (pd.DataFrame({"k": requests["key"], "s": first}).groupby("k")["s"].nunique() == 1).all()
    assert set(first[requests["requires_class"].eq("gpu").fillna(False).to_numpy()]) <= {"s8", "s9", "s10"}


@pytest.mark.parametrize("router", [RendezvousRouter(), WeightedRendezvousRouter()])
def test_rendezvous_peers_place_replicas_apart(router):
    requests, servers = mixed_batch()
    assert violation_rates(requests, servers, router.route(requests, servers))["anti_affinity_violation_rate"] == 0.0


@pytest.mark.parametrize("router", [JumpHashRouter(), MaglevRouter(), BoundedLoadRouter()])
def test_group_blind_peers_route_replicas_as_independent_keys(router):
    servers = make_servers(classes=["general"] * 3, zones=["z0", "z1", "z2"])
    n = 300
    requests = make_requests(
        [f"k{i}" for i in range(3 * n)], anti=[f"x{i // 3}" for i in range(3 * n)], replica=[i % 3 for i in range(3 * n)]
    )
    rate = violation_rates(requests, servers, router.route(requests, servers))["anti_affinity_violation_rate"]
    assert rate == pytest.approx(1 - 2 / 9, abs=0.1)  # 3 independent picks of 3 servers collide w.p. 7/9


def test_masked_gumbel_never_picks_an_ineligible_server():
    # This (unit, server) pair hashes to a uniform that float32 rounds to 1.0:
    # its Gumbel score was +inf, and NaN once masked, which argmax then picked.
    fleet = Fleet(
        server_id=np.array(["gpu-0", "general-0"], dtype=object),
        server_class=np.array(["gpu", "general"], dtype=object),
        zone=np.array(["z0", "z0"], dtype=object),
        capacity=np.ones((2, 3)),
        server_hash=np.array([12345, 1107532893143027131], dtype=np.uint64),
    )
    unit_hash = np.array([14146081911160362582], dtype=np.uint64)
    scores = gumbel_scores(unit_hash, fleet, np.zeros((1, 2), dtype=np.float32))
    assert np.isfinite(scores).all()
    units = Units.from_frame(make_requests(["k"], requires=["gpu"]))
    units = Units(**{**units.__dict__, "unit_hash": unit_hash})
    assert RendezvousRouter().route_units(units, fleet).tolist() == [0]


@pytest.mark.parametrize("name", ["maglev", "bounded_load_ch"])
def test_cached_fleet_structures_follow_fleet_changes(name):
    requests, servers = mixed_batch()
    warm = PEERS[name]()
    warm.route(requests, servers)
    smaller = servers[servers["server_id"] != "s0"]
    assert (warm.route(requests, smaller) == PEERS[name]().route(requests, smaller)).all()
