"""The rounds curve of ``aiprim run --rounds``: every metric a primitive follows, for the learned model and the
same best peer, per round (the compiler follows top-1 and MAPE beside Kendall tau)."""

from __future__ import annotations

import json

from aiprim import primitives
from aiprim.flows import rounds
from aiprim.primitives._report import EvaluationReport


def _round_result(folder, number: int, learned: dict, xgboost: dict, roofline: dict) -> dict:
    snapshot = folder / f"s{number}"
    snapshot.mkdir()
    (snapshot / "manifest.json").write_text(json.dumps({"round": number}))
    report = EvaluationReport(primitive="compiler", primary_metric="kendall_tau", higher_is_better=True,
                              candidates={"learned": learned}, baselines={"xgboost": xgboost, "roofline": roofline})
    return {"snapshot": str(snapshot), "report": report.to_dict(), "version": str(number + 1),
            "decision": {"promoted": number == 1}}


def test_the_curve_follows_the_compilers_top1_and_mape_beside_tau_for_the_best_peer_on_tau(tmp_path, capsys):
    results = [
        _round_result(tmp_path, 0, {"kendall_tau": 0.55, "top1_score": 0.80, "mape": 0.45},
                      {"kendall_tau": 0.57, "top1_score": 0.85, "mape": 0.40}, {"kendall_tau": 0.30, "top1_score": 0.90, "mape": 0.9}),
        {"snapshot": str(tmp_path / "failed"), "report": None},  # a round whose branch failed: no point
        _round_result(tmp_path, 1, {"kendall_tau": 0.65, "top1_score": 0.88, "mape": 0.30},
                      {"kendall_tau": 0.60, "top1_score": 0.86, "mape": 0.38}, {"kendall_tau": 0.31, "top1_score": 0.70, "mape": 0.8}),
    ]
    points = rounds.curve_points("compiler", results)
    assert [p["round"] for p in points] == [0, 1] and [p["promoted"] for p in points] == [False, True]
    assert list(points[0]["metrics"]) == ["kendall_tau", "top1_score", "mape"]
    # The peer is the best on the primary metric (xgboost), even where another peer has a better top-1.
    assert points[0]["best_peer"] == "xgboost" and points[0]["metrics"]["top1_score"] == {"learned": 0.80, "best_peer": 0.85}
    assert points[1]["metrics"]["mape"] == {"learned": 0.30, "best_peer": 0.38}

    figure = rounds._plot(primitives.get("compiler"), points)
    assert [ax.get_ylabel() for ax in figure.axes] == ["kendall_tau (higher is better)", "top1_score", "mape"]

    rounds.print_curve("compiler", points)
    out = capsys.readouterr().out
    assert "kendall_tau" in out and "top1_score" in out and "mape" in out
    assert "0.650 / 0.600" in out and "0.300 / 0.380" in out
