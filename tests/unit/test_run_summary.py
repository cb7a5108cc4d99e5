"""The closing table of `aiprim run`: every number on a row comes from that run's side-by-side evaluation."""

from __future__ import annotations

from aiprim.flows.cli import print_summary
from aiprim.primitives._report import EvaluationReport


def _result(version: str, learned: float, champion: float | None, promoted: bool) -> dict:
    candidates = {"learned": {"peak_to_mean": learned}}
    models = {"learned": "run-1"}
    if champion is not None:
        candidates["champion"], models["champion"] = {"peak_to_mean": champion}, "1"
    report = EvaluationReport("balancer", "peak_to_mean", False, candidates,
                              {"rendezvous": {"peak_to_mean": 2.5}, "lp_weighted_rendezvous": {"peak_to_mean": 1.489}},
                              models=models)
    return {"report": report.to_dict(), "decision": {"version": version, "promoted": promoted}}


def test_the_summary_sets_the_challenger_beside_the_champion_and_the_peer_it_met(capsys):
    print_summary({"balancer": _result("3", 1.347, 1.344, False)})
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("primitive"))
    assert lines[header].split("  ")[:2] == ["primitive", "primary metric"]
    row = lines[header + 1].split()
    assert row == ["balancer", "peak_to_mean", "(lower", "is", "better)", "v3", "1.347", "v1", "1.344",
                   "lp_weighted_rendezvous", "1.489", "v3", "kept", "challenger"], row


def test_a_first_version_and_a_failed_branch_leave_their_cells_empty(capsys):
    print_summary({"balancer": _result("1", 1.2, None, True),
                   "sharder": {"error": "source /x: not found", "report": None}})
    out = capsys.readouterr().out
    assert "v1 1.2" in out and "v1 promoted" in out
    sharder = next(line for line in out.splitlines() if line.startswith("sharder"))
    assert sharder.endswith("FAILED (see the error below)") and sharder.split()[5:8] == ["-", "-", "-"], sharder


def test_a_version_for_another_deployment_says_which(capsys):
    """A version trained with ``--deployment eu`` became eu's champion, not the default one's."""
    eu = _result("2", 1.352, None, True)
    eu["decision"]["deployment"] = "eu"
    print_summary({"balancer": eu})
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("balancer"))
    assert row.endswith("v2 promoted (deployment eu)"), row
