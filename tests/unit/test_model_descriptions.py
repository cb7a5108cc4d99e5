"""The text of the MLflow model and version pages, built from a real evaluation of a trained balancer,
and written to a real registry (MLflow on SQLite in the test's project folder)."""

from __future__ import annotations

import re

import pytest

from aiprim import primitives
from aiprim.primitives._report import CHAMPION_CANDIDATE
from aiprim.registry._descriptions import (
    describe_registration, describe_version, model_description, primitive_summary, version_description,
)
from aiprim.registry._promotion import decide


@pytest.fixture(scope="module")
def balancer_report(trained_balancer):
    """The balancer scored beside itself as champion and beside every classical peer, on held-out requests."""
    runtime, held_out = trained_balancer
    report = primitives.get("balancer").evaluate({"learned": runtime, CHAMPION_CANDIDATE: runtime}, held_out,
                                                  {"disruption_trials": 1}, models={"learned": "run-x", CHAMPION_CANDIDATE: "2"})
    report.snapshot, report.part = "/data/snapshots/balancer/0123abcd", "holdout"
    return report


def _table(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]


@pytest.mark.parametrize("name", ["balancer", "query", "compiler", "sharder"])
def test_every_model_description_says_what_it_replaces_and_how_it_is_judged(name):
    prim = primitives.get(name)
    text = model_description(prim)
    assert text.startswith(f"**aiprim-{name}**: Replaces ")
    direction = "higher is better" if prim.higher_is_better else "lower is better"
    assert f"Primary metric: `{prim.primary_metric}` ({direction})" in text
    assert "\n" not in primitive_summary(prim)  # one paragraph, whatever the source's line breaks


def test_a_primitive_without_a_description_falls_back_to_its_module_docstring():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "thirdparty"))
    try:
        from aiprim_admission import Admission
    finally:
        sys.path.pop(0)
    assert primitive_summary(Admission()).startswith("Cache admission as a learned primitive: admit an object only if")


def test_version_description_tables_the_version_against_champion_and_best_peer(balancer_report):
    report = balancer_report
    text = version_description(report, None, "3")
    rows = _table(text)
    peer, peer_value = report.best_baseline()
    assert rows[0] == ["metric", "this version", "champion (v2)", f"best classical peer: {peer}"]
    assert rows[2][0] == "**peak_to_mean** (primary)"
    learned = report.metrics["peak_to_mean"]
    assert rows[2][1:] == [f"{learned:.4g}", f"{learned:.4g}", f"{peer_value:.4g}"]
    # every numeric metric of the version, once each, primary first
    assert [r[0] for r in rows[3:]] == sorted(k for k, v in report.metrics.items()
                                               if isinstance(v, (int, float)) and k != "peak_to_mean")[:11]
    assert "Version 3, evaluated on `0123abcd` (holdout); `peak_to_mean` is primary (lower is better)." in text
    assert text.endswith("**Promotion**: pending (the policy has not decided yet).")


def test_the_promotion_decision_closes_the_version_description(balancer_report):
    prim = primitives.get("balancer")
    decision = decide(prim, balancer_report, prim.guardrails({}), 0.01, "3", has_champion=True)
    assert not decision.promoted  # the same model twice never beats itself by the margin
    text = version_description(balancer_report, decision, "3")
    assert re.search(r"\*\*Promotion\*\*: not promoted: peak_to_mean [\d.]+ vs champion [\d.]+, scored side by side", text)


def test_descriptions_land_on_the_registry_pages(project, balancer_report, tmp_path):
    from aiprim.registry._store import configure, model_name

    client = configure()
    prim = primitives.get("balancer")
    client.create_registered_model(model_name("balancer"))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    version = client.create_model_version(model_name("balancer"), source=model_dir.as_uri()).version
    describe_registration(client, prim, version, balancer_report)
    assert client.get_registered_model("aiprim-balancer").description == model_description(prim)
    assert client.get_model_version("aiprim-balancer", version).description.endswith("pending (the policy has not decided yet).")

    decision = decide(prim, balancer_report, prim.guardrails({}), 0.01, str(version), has_champion=True)
    describe_version(client, "balancer", version, balancer_report, decision)
    assert "**Promotion**: not promoted: " in client.get_model_version("aiprim-balancer", version).description
