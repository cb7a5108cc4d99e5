"""Deployments end to end: two deployments of the balancer, each trained from its own snapshot through the
declared steps, get independent champions; ``load_runtime(..., deployment=...)`` serves each; rollback and
unknown deployments stay per deployment."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def _pipeline(snapshot_dir, cfg):
    from aiprim.flows.pipeline import run_steps

    return run_steps("balancer", cfg, {"snapshot_dir": str(snapshot_dir)}, "validate", "promote", trials=0)


def test_two_deployments_get_independent_champions(project, balancer_tables, capsys):
    from aiprim import load_runtime
    from aiprim.flows import config, steps
    from aiprim.flows.cli import main
    from aiprim.primitives.balancer._source import generate
    from aiprim.registry import configure, resolve_model
    from aiprim.registry._promotion import CHAMPION, alias_version

    from tests.conftest import SMALL_SOURCE, write_balancer_snapshot

    cfg = config.load("small")

    default_dir = write_balancer_snapshot(project / "data" / "snapshots", balancer_tables)
    first = _pipeline(default_dir, cfg)
    assert first["decision"]["promoted"], first["decision"]

    # Another fleet, named as a deployment by its manifest (what `aiprim snapshot --deployment` writes).
    from aiprim import primitives
    from aiprim.primitives._snapshot import write_snapshot

    other = generate({**SMALL_SOURCE, "zipf_exponent": 1.0}, seed=3)
    eu_dir = write_snapshot("balancer", primitives.get("balancer").schema, other, project / "data" / "snapshots", "tests",
                            extra={"deployment": "eu-west"})
    second = _pipeline(eu_dir, cfg)
    decision = second["decision"]
    # Judged against classical peers only: the default deployment's champion is not this deployment's.
    assert decision["promoted"] and decision["deployment"] == "eu-west" and "no champion yet" in decision["reason"], decision

    client = configure()
    assert alias_version(client, "balancer", CHAMPION) == first["version"]
    assert alias_version(client, "balancer", CHAMPION, "eu-west") == second["version"]
    assert resolve_model("balancer", "champion", "eu-west")[0] == second["run_id"]
    assert resolve_model("balancer")[0] == first["run_id"]
    default_runtime = load_runtime("balancer")
    eu_runtime = load_runtime("balancer", deployment="eu-west")
    assert set(eu_runtime.server_classes) == set(other["servers"]["server_class"])
    routed = eu_runtime.route(other["requests"].head(500), other["servers"])
    assert set(routed) <= set(other["servers"]["server_id"])
    assert default_runtime.route(balancer_tables["requests"].head(500), balancer_tables["servers"]) is not None

    status = steps.status(cfg)["balancer"]
    assert status["version"] == first["version"] and status["deployment"] == "default"
    assert status["deployments"]["eu-west"]["version"] == second["version"]
    assert status["deployments"]["eu-west"]["lineage"]["deployment"] == "eu-west"
    capsys.readouterr()
    assert main(["status"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["balancer", "eu-west", "v" + second["version"]] in [row[:3] for row in rows], rows
    assert main(["status", "--details"]) == 0
    assert "balancer [eu-west]: champion " + second["version"] in capsys.readouterr().out

    # A manual promotion moves the version's own deployment's alias; rollback is per deployment.
    assert main(["promote", "balancer", "--version", first["version"], "--deployment", "eu-west"]) == 0
    assert alias_version(client, "balancer", CHAMPION, "eu-west") == first["version"]
    assert alias_version(client, "balancer", CHAMPION) == first["version"]
    capsys.readouterr()
    assert main(["status"]) == 0  # the champion now serving eu-west was trained for default: the table says so
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["balancer", "eu-west", "v" + first["version"], "(trained", "for", "default)"] in [row[:6] for row in rows], rows
    assert ["balancer", "default", "v" + first["version"], "-"] in [row[:4] for row in rows], rows
    assert main(["rollback", "balancer", "--deployment", "eu-west"]) == 0
    assert alias_version(client, "balancer", CHAMPION, "eu-west") == second["version"]
    assert alias_version(client, "balancer", CHAMPION) == first["version"]
    capsys.readouterr()

    # An unknown deployment, or a malformed name: one line naming it, non-zero exit.
    with pytest.raises(LookupError, match="no deployment 'mars'.*known: default, eu-west"):
        load_runtime("balancer", deployment="mars")
    with pytest.raises(LookupError, match="no model 'challenger'.*other deployments have models: eu-west .name one with --deployment"):
        load_runtime("balancer", "challenger")  # promoted, so the default deployment's challenger alias is gone
    with pytest.raises(LookupError, match="has no version 99$"):
        load_runtime("balancer", "99")
    with pytest.raises(LookupError, match=r"has no alias 'champoin' \(its aliases: champion, champion-eu-west"):
        load_runtime("balancer", "champoin")  # not "has no model", with a hint to other deployments
    assert main(["evaluate", "balancer", "--snapshot", str(eu_dir), "--deployment", "mars", "--json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no deployment 'mars'" in err[0], err
    assert main(["run", "--deployment", "EU West"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deployment 'EU West'" in err[0], err


def test_snapshot_records_its_deployment(project):
    from aiprim.flows import config, steps
    from aiprim.primitives._snapshot import read_manifest

    cfg = config.load("small")
    cfg["primitive_configs"]["balancer"]["source"] = {"servers": 8, "requests": 2000, "keys": 500, "zipf_offset": 50}
    made = steps.snapshot("balancer", cfg, deployment="eu-west")
    assert read_manifest(made)["deployment"] == "eu-west"
    # An import that names no deployment gets it; one naming another deployment is refused.
    moved = steps.snapshot("balancer", cfg, source=str(made), deployment="eu-west")
    assert read_manifest(moved)["deployment"] == "eu-west"
    from aiprim.flows.errors import AiprimError

    stored = sorted(p.name for p in made.parent.iterdir())
    with pytest.raises(AiprimError, match="names deployment 'eu-west', not 'us-east'"):
        steps.snapshot("balancer", cfg, source=str(made), deployment="us-east")
    assert sorted(p.name for p in made.parent.iterdir()) == stored  # the refused copy does not stay in the store
    # The embedded source draws a new deployment's first round as it drew the default's: the same tables, but
    # another snapshot, whose manifest names the deployment it was drawn for.
    first_default = steps.snapshot("balancer", cfg)
    assert first_default != made and read_manifest(first_default)["deployment"] == "default"
    # Telemetry whose manifest names no deployment is stored as the one named, as often as it is named.
    from aiprim import primitives
    from aiprim.primitives._snapshot import write_snapshot
    from aiprim.primitives.balancer._source import generate

    bare = write_snapshot("balancer", primitives.get("balancer").schema,
                          generate({"servers": 8, "requests": 2000, "keys": 500, "zipf_offset": 50}, seed=4),
                          project / "elsewhere", "tests")
    assert "deployment" not in json.loads((bare / "manifest.json").read_text())
    named = steps.snapshot("balancer", cfg, source=str(bare), deployment="us-east")
    assert read_manifest(named)["deployment"] == "us-east"
    again = steps.snapshot("balancer", cfg, source=str(bare), deployment="ap-south")
    assert again != named and read_manifest(again)["deployment"] == "ap-south"
