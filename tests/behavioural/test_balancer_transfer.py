"""The balancer's transfer model: what it decodes depends on what a deployment is, not on what it is called,
a deployment it was fitted on decodes to a balancer as good as one trained there, and a decoded balancer is a
plain runtime that beats hashing on a fleet it never saw."""

from __future__ import annotations

import numpy as np
import pytest

from aiprim import primitives
from tests.unit.renaming import renamed


@pytest.fixture(scope="module")
def fitted():
    """A transfer model fitted briefly on two small drawn deployments, and a third deployment never seen."""
    from aiprim.primitives.balancer._transfer import TransferParams

    prim = primitives.get("balancer")
    model = prim.transfer_model()
    draws = [model.draw_deployment(seed, servers=(10, 20), requests_per_server=600, max_requests=12000) for seed in (11, 12, 13)]
    parts = [prim.split(tables, 0.2) for tables in draws]
    population = [(train, prim.describe_deployment(train)) for train, _ in parts[:2]]
    state = model.fit(population, TransferParams(epochs=2, scenarios_per_member=8, hot_units=100))
    return prim, model, state, draws[2], parts[:2]


def test_renaming_a_deployment_decodes_the_same_kernel_and_quality(fitted, tmp_path):
    prim, model, state, tables, _ = fitted
    train, held_out = prim.split(tables, 0.2)
    decoded = model.decode(state, prim.describe_deployment(train), train, tmp_path / "a")
    other_train, other_held_out = prim.split(renamed(tables), 0.2)
    redecoded = model.decode(state, prim.describe_deployment(other_train), other_train, tmp_path / "b")
    for before, after in zip(decoded.weights + decoded.biases, redecoded.weights + redecoded.biases):
        np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)
    order = [list(redecoded.request_classes).index(c) for c in
             renamed_classes(train, other_train, list(decoded.request_classes))]
    np.testing.assert_allclose(decoded.class_features[:-1], redecoded.class_features[order], rtol=1e-5)
    # Routing hashes the names, so placements differ (hash noise); the policy before hashing may not.
    first = decoded.expected_peak_to_mean(held_out["requests"], held_out["servers"])
    second = redecoded.expected_peak_to_mean(other_held_out["requests"], other_held_out["servers"])
    assert second == pytest.approx(first, rel=0.02)


def renamed_classes(original: dict, other: dict, classes: list) -> list:
    """The renamed name of each request class, matched by its total demand (the renaming keeps every row's costs)."""
    def totals(tables):
        grouped = tables["requests"].groupby("request_class")[["cost_cpu", "cost_mem", "cost_io"]].sum()
        return {name: tuple(np.round(row.to_numpy(), 6)) for name, row in grouped.iterrows()}

    by_total = {v: k for k, v in totals(other).items()}
    before = totals(original)
    return [by_total[before[c]] for c in classes]


def test_a_decoded_balancer_is_a_plain_runtime_that_beats_hashing_on_an_unseen_fleet(fitted, tmp_path):
    prim, model, state, tables, _ = fitted
    train, held_out = prim.split(tables, 0.2)
    decoded = model.decode(state, prim.describe_deployment(train), train, tmp_path / "rt")
    assert decoded.decode_seconds > 0  # measured and reported; the 2 s goal is benchmarks/transfer.py's, not a timed test
    loaded = prim.load_runtime(tmp_path / "rt")
    assert not set(loaded.request_classes) & {"compute", "cache", "scan", "web", "inference"}
    report = prim.evaluate(loaded, held_out, {"disruption_trials": 1})
    best_peer, value = report.best_baseline()
    assert report.metrics["peak_to_mean"] < value, (report.metrics["peak_to_mean"], best_peer, value)
    assert report.metrics["class_violation_rate"] == 0.0 and report.metrics["affinity_violation_rate"] == 0.0


@pytest.mark.parametrize("member", [0, 1])
def test_a_deployment_it_was_fitted_on_decodes_as_good_as_training_there(fitted, member, tmp_path):
    """Issue 13's identity case: decoding a population member's own telemetry gives up nothing against a balancer
    trained from scratch on it, scored side by side on the member's newest requests."""
    prim, model, state, _, members = fitted
    train, held_out = members[member]
    scratch = prim.train_runtime(train, {"max_epochs": 2, "scenarios_per_epoch": 8, "hot_units": 100}, tmp_path / "scratch")
    decoded = model.decode(state, prim.describe_deployment(train), train, tmp_path / "decoded")
    report = prim.evaluate({"scratch": scratch, "decoded": decoded}, held_out, {"disruption_trials": 1, "training_tables": train})
    peak = {name: metrics["peak_to_mean"] for name, metrics in report.candidates.items()}
    assert peak["decoded"] <= peak["scratch"] * 1.02, peak
    assert report.candidates["decoded"]["class_violation_rate"] == 0.0
