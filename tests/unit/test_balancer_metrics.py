"""Balancer metrics (TELEMETRY.md): exact values on hand-made batches, and the lower bound's validity."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from aiprim.primitives.balancer._metrics import (
    disruption_ratios,
    evaluate_router,
    evaluate_routers,
    lookups_per_s,
    peak_to_mean,
    peak_to_mean_lower_bound,
    violation_rates,
)
from aiprim.primitives.balancer._peers import PEERS, JumpHashRouter, RendezvousRouter, WeightedRendezvousRouter
from aiprim.primitives.balancer._fleet import Fleet, Units
from tests.unit.frames import make_requests, make_servers, mixed_batch

METRIC_KEYS = {
    "peak_to_mean",
    "peak_to_mean_worst",
    "peak_to_mean_lower_bound",
    "affinity_violation_rate",
    "anti_affinity_violation_rate",
    "class_violation_rate",
    "disruption_ratio_remove",
    "disruption_ratio_add",
    "lookups_per_s",
}


def test_peak_to_mean_by_hand():
    servers = make_servers(classes=["general"] * 2, caps=[[1, 1, 1], [3, 3, 3]])
    requests = make_requests(["a", "b", "c", "d"], costs=[[1, 0, 0]] * 4)
    # u* = 4 / 4 = 1 cpu; s0 holds 2 on capacity 1 -> 2.0; mem and io are idle and ignored.
    assert peak_to_mean(requests, servers, np.array(["s0", "s0", "s1", "s1"], dtype=object)) == pytest.approx(2.0)
    assert peak_to_mean(requests, servers, np.array(["s0", "s1", "s1", "s1"], dtype=object)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in the fleet"):
        peak_to_mean(requests, servers, np.array(["s0", "s1", "s9", "s1"], dtype=object))


def test_lower_bound_is_one_when_trivially_balanceable():
    servers = make_servers(classes=["general"] * 4)
    requests = make_requests([f"k{i}" for i in range(8)])
    assert peak_to_mean_lower_bound(requests, servers) == pytest.approx(1.0, abs=1e-9)


def test_lower_bound_sees_complementary_shapes():
    # cpu-heavy work fits the cpu-rich server and mem-heavy work the mem-rich
    # one: perfectly balanceable, though not by a shape-blind split.
    servers = make_servers(classes=["general"] * 2, caps=[[4, 1, 1], [1, 4, 1]])
    requests = make_requests(["c", "m"], costs=[[4, 1, 1], [1, 4, 1]])
    bound = peak_to_mean_lower_bound(requests, servers)
    assert bound == pytest.approx(1.0, abs=1e-6)
    assert peak_to_mean(requests, servers, np.array(["s0", "s1"], dtype=object)) == pytest.approx(1.0)


def test_lower_bound_counts_an_indivisible_hot_unit():
    servers = make_servers(classes=["general"] * 2)
    requests = make_requests(["hot"] * 9 + ["cold"])
    # The hot key alone puts 9 of 10 on one of two equal servers: 0.9 / 0.5.
    assert peak_to_mean_lower_bound(requests, servers) == pytest.approx(1.8)


def test_lower_bound_respects_required_class():
    servers = make_servers(classes=["gpu", "general", "general", "general"])
    requests = make_requests([f"k{i}" for i in range(40)], requires=["gpu"] * 40)
    assert peak_to_mean_lower_bound(requests, servers) == pytest.approx(4.0, rel=1e-6)


def test_lower_bound_never_exceeds_the_best_integral_routing():
    # Brute force every assignment of 6 units with random demand shapes to 3
    # heterogeneous servers (one gpu): the bound must stay below the optimum.
    rng = np.random.default_rng(3)
    for trial in range(5):
        servers = make_servers(classes=["general", "general", "gpu"], zones=["z0", "z1", "z2"], caps=rng.uniform(0.5, 3, (3, 3)))
        costs = rng.lognormal(0, 1, (6, 3))
        requires = ["gpu" if i == 0 else None for i in range(6)]
        requests = make_requests([f"k{i}" for i in range(6)], requires=requires, costs=costs)
        bound = peak_to_mean_lower_bound(requests, servers)
        best = math.inf
        for combo in itertools.product(range(3), repeat=6):
            if combo[0] != 2:
                continue  # k0 needs the gpu server
            best = min(best, peak_to_mean(requests, servers, servers["server_id"].to_numpy()[list(combo)]))
        assert 1.0 <= bound <= best + 1e-9, (trial, bound, best)


def test_lower_bound_below_every_peer():
    requests, servers = mixed_batch()
    bound = peak_to_mean_lower_bound(requests, servers)
    assert bound >= 1.0
    for name, factory in PEERS.items():
        assert bound <= peak_to_mean(requests, servers, factory().route(requests, servers)) + 1e-9, name


def test_violation_rates_detect_constructed_violations():
    servers = make_servers(classes=["general", "general", "gpu", "general"], zones=["z0", "z0", "z1", "z1"])
    rows = [
        # key, requires, affinity, anti, replica, server
        ("a1", None, "A", None, None, "s0"),
        ("a2", None, "A", None, None, "s1"),  # A split over two servers
        ("b1", None, "B", None, None, "s0"),
        ("b2", None, "B", None, None, "s0"),
        ("x0", None, None, "X", 0, "s0"),
        ("x1", None, None, "X", 1, "s0"),  # X: two replicas, one server
        ("y0", None, None, "Y", 0, "s0"),
        ("y1", None, None, "Y", 1, "s1"),  # Y: distinct servers, same zone, two zones exist
        ("z0", None, None, "Z", 0, "s0"),
        ("z1", None, None, "Z", 1, "s3"),  # Z: fine
        ("g0", "gpu", None, None, None, "s2"),
        ("g1", "gpu", None, None, None, "s1"),  # gpu work on a general server
    ]
    requests = make_requests(
        [r[0] for r in rows], requires=[r[1] for r in rows], affinity=[r[2] for r in rows], anti=[r[3] for r in rows],
        replica=[r[4] for r in rows],
    )
    rates = violation_rates(requests, servers, np.array([r[5] for r in rows], dtype=object))
    assert rates == {"affinity_violation_rate": 0.5, "anti_affinity_violation_rate": 2 / 3, "class_violation_rate": 0.5}


def test_zone_sharing_is_allowed_when_the_eligible_fleet_has_too_few_zones():
    servers = make_servers(classes=["gpu", "gpu", "general"], zones=["z0", "z0", "z1"])
    requests = make_requests(["x0", "x1"], requires=["gpu", "gpu"], anti=["X", "X"], replica=[0, 1])
    rates = violation_rates(requests, servers, np.array(["s0", "s1"], dtype=object))
    assert rates["anti_affinity_violation_rate"] == 0.0


def test_server_sharing_is_allowed_only_when_the_eligible_servers_are_fewer_than_the_replicas():
    # Three replicas that need a class of two servers (a drawn deployment, family-0004 of `dvc repro`): no routing
    # keeps them apart, and a guardrail of zero violations must not ask it to. Two replicas there still must.
    servers = make_servers(classes=["gpu", "gpu", "general", "general"], zones=["z0", "z1", "z0", "z1"])
    three = make_requests(["x0", "x1", "x2"], requires=["gpu"] * 3, anti=["X"] * 3, replica=[0, 1, 2])
    assert violation_rates(three, servers, np.array(["s0", "s1", "s0"], dtype=object))["anti_affinity_violation_rate"] == 0.0
    two = make_requests(["y0", "y1"], requires=["gpu"] * 2, anti=["Y"] * 2, replica=[0, 1])
    assert violation_rates(two, servers, np.array(["s0", "s0"], dtype=object))["anti_affinity_violation_rate"] == 1.0
    unconstrained = make_requests(["z0", "z1", "z2"], anti=["Z"] * 3, replica=[0, 1, 2])
    assert violation_rates(unconstrained, servers, np.array(["s0", "s1", "s0"], dtype=object))["anti_affinity_violation_rate"] == 1.0


def test_rendezvous_removal_moves_only_the_removed_servers_units():
    servers = make_servers(classes=["general"] * 6 + ["gpu"] * 2)
    requests = make_requests([f"k{i}" for i in range(3000)], requires=[None if i % 7 else "gpu" for i in range(3000)])
    ratios = disruption_ratios(RendezvousRouter(), requests, servers, n_trials=5)
    assert ratios["disruption_ratio_remove"] == 1.0
    # Adding a server: moves ~ its share among each unit's eligible servers.
    assert ratios["disruption_ratio_add"] == pytest.approx(1.0, abs=0.15)


def test_add_ratio_uses_capacity_share():
    servers = make_servers(classes=["general"] * 4, caps=[[1, 1, 1]] * 3 + [[5, 5, 5]])
    requests = make_requests([f"k{i}" for i in range(8000)])
    ratios = disruption_ratios(WeightedRendezvousRouter(), requests, servers, n_trials=4, seed=1)
    assert ratios["disruption_ratio_add"] == pytest.approx(1.0, abs=0.1)


def test_jump_hash_pays_for_removing_a_middle_server():
    servers = make_servers(classes=["general"] * 10)
    requests = make_requests([f"k{i}" for i in range(5000)])
    assert disruption_ratios(JumpHashRouter(), requests, servers, n_trials=5)["disruption_ratio_remove"] > 2.0


def test_disruption_skips_removals_the_router_cannot_serve():
    # Removing the only gpu server leaves gpu work nowhere to go: that trial is replaced.
    servers = make_servers(classes=["general", "general", "gpu"])
    requests = make_requests([f"k{i}" for i in range(300)], requires=[None if i % 3 else "gpu" for i in range(300)])
    ratios = disruption_ratios(RendezvousRouter(), requests, servers, n_trials=3)
    assert ratios["disruption_ratio_remove"] == 1.0


def test_evaluate_routers_reports_every_key_with_a_shared_bound():
    requests, servers = mixed_batch()
    report = evaluate_routers({name: factory() for name, factory in PEERS.items()}, requests, servers, disruption_trials=2)
    assert set(report) == set(PEERS)
    bounds = {entry["peak_to_mean_lower_bound"] for entry in report.values()}
    assert len(bounds) == 1
    for entry in report.values():
        assert set(entry) == METRIC_KEYS
        assert entry["lookups_per_s"] > 0
        assert entry["peak_to_mean"] >= entry["peak_to_mean_lower_bound"] - 1e-9
    single = evaluate_router(RendezvousRouter(), requests, servers, disruption_trials=2)
    assert single["peak_to_mean"] == report["rendezvous"]["peak_to_mean"]
    assert lookups_per_s(RendezvousRouter(), requests, servers, repeats=1) > 0


def test_peak_to_mean_is_the_median_over_draws_of_the_hash(tmp_path, balancer_tables):
    """Draw 0 is the servers' own names; each later draw renames every server, the learned runtime's
    hot-unit table along (else its pinned units would hash as unpinned and the draws would judge another policy)."""
    from aiprim.primitives.balancer._metrics import peak_to_mean_draws

    requests, servers = mixed_batch()
    router = RendezvousRouter()
    draws = peak_to_mean_draws(router, requests, servers, 5)
    assert draws[0] == peak_to_mean(requests, servers, router.route(requests, servers))
    assert len(set(draws)) > 1, "renaming redraws the hash"
    report = evaluate_router(router, requests, servers, disruption_trials=1, hash_draws=5)
    assert report["peak_to_mean"] == float(np.median(draws)) and report["peak_to_mean_worst"] == max(draws)

    from aiprim import primitives

    prim = primitives.get("balancer")
    train, held_out = prim.split(balancer_tables, 0.2)
    runtime = prim.train_runtime(train, {"max_epochs": 1, "scenarios_per_epoch": 2, "hot_units": 200}, tmp_path)
    servers = balancer_tables["servers"]
    units = Units.from_frame(held_out["requests"])
    pinned = np.isin(units.unit_hash, runtime.hot_units.to_numpy()) & (units.anti_group < 0)
    assert pinned.any()
    own = runtime.route_units(units, Fleet.from_frame(servers))
    renamed = Fleet.from_frame(servers.assign(server_id=servers["server_id"] + "~1"))
    np.testing.assert_array_equal(runtime.renamed_servers("~1").route_units(units, renamed)[pinned], own[pinned])
    assert (runtime.route_units(units, renamed)[pinned] != own[pinned]).any(), "the table alone keeps them in place"


def test_metrics_ignore_unknown_columns_and_accept_pandas_strings():
    requests, servers = mixed_batch()
    requests = requests.assign(latency_ms=1.0, server_id=pd.array([None] * len(requests), dtype="string"))
    assigned = RendezvousRouter().route(requests, servers)
    assert peak_to_mean(requests, servers, pd.Series(assigned, dtype="string")) == peak_to_mean(requests, servers, assigned)
