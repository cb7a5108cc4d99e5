"""The pipeline is declared once (aiprim.flows.pipeline.STEPS); dvc.yaml and the CLI follow it."""

from __future__ import annotations

from pathlib import Path

import yaml

from aiprim.flows import pipeline

REPO = Path(__file__).resolve().parents[2]


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_dvc_has_one_stage_per_step_in_order_then_the_transfer_stage():
    assert list(dvc_stages()) == [step.name for step in pipeline.STEPS] + [pipeline.TRANSFER_STEP.name]


def test_each_stage_runs_its_step_on_the_files_of_what_it_needs():
    givers = {step.gives: step for step in pipeline.STEPS}
    for step in pipeline.STEPS + (pipeline.TRANSFER_STEP,):
        stage = dvc_stages()[step.name]["do"]
        assert stage["cmd"] == f".venv/bin/aiprim step {step.name} ${{item}} --dir data/dvc/${{item}}"
        deps = set(stage.get("deps", []))
        for need in step.needs:
            assert f"data/dvc/${{item}}/{givers[need].file}" in deps, (step.name, need)
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
        assert f"data/dvc/${{item}}/{step.file}" in outs, step.name


def test_dvc_runs_every_configured_primitive_and_transfer_stage():
    configured = yaml.safe_load((REPO / "configs" / "pipeline.yaml").read_text())
    variables = yaml.safe_load((REPO / "dvc.yaml").read_text())["vars"]
    assert variables[0]["primitives"] == configured["primitives"]
    assert variables[1]["transfer_primitives"] == configured["transfer"]["primitives"]


def test_train_runs_on_train_params_only_so_changing_one_retrains_without_retuning():
    stages = dvc_stages()
    assert {"configs/${item}.yaml": ["train"]} in stages["train"]["do"]["params"]
    assert all("train" not in entry.get("configs/${item}.yaml", []) for entry in stages["tune"]["do"]["params"])


def test_every_stage_that_reads_settings_tracks_the_profile():
    """A profile changes every primitive's settings; DVC must see which one the outputs were made with."""
    for name, stage in dvc_stages().items():
        if name == "register":  # registers what train and evaluate wrote; it reads no setting
            assert "params" not in stage["do"]
            continue
        tracked = [key for entry in stage["do"]["params"] for key in entry.get("configs/pipeline.yaml", [])]
        assert {"profile", "profiles"} <= set(tracked), name


def test_a_stage_refuses_a_profile_dvc_cannot_see_and_runs_the_one_it_tracks(project, monkeypatch, capsys):
    from aiprim.flows import config
    from aiprim.flows.cli import main
    from aiprim.settings import packaged_configs

    monkeypatch.setenv("AIPRIM_PROFILE", "small")
    assert main(["step", "snapshot", "balancer", "--dir", str(project / "data" / "dvc" / "balancer")]) != 0
    err = capsys.readouterr().err.strip()
    assert err == ("aiprim: error: AIPRIM_PROFILE=small: a DVC stage runs with the profile in configs/pipeline.yaml, "
                   "which dvc.lock records; run `dvc exp run -S configs/pipeline.yaml:profile=small` instead"), err
    assert not (project / "data" / "dvc").exists(), "nothing written"

    configs = project / "configs"
    configs.mkdir()
    for path in packaged_configs().glob("*.yaml"):
        (configs / path.name).write_text(path.read_text())
    pipeline_yaml = configs / "pipeline.yaml"
    pipeline_yaml.write_text(pipeline_yaml.read_text().replace("\nprofile: null", "\nprofile: small", 1))
    monkeypatch.setenv("AIPRIM_CONFIG_DIR", str(configs))
    assert config.file_profile() == "small"
    assert config.load()["primitive_configs"]["balancer"]["source"]["servers"] == 24  # the small profile's fleet
    monkeypatch.delenv("AIPRIM_PROFILE")
    assert config.load()["profile"] == "small"


def test_steps_refuse_to_run_without_what_they_need(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="needs run_id"):
        pipeline.run_step(pipeline.step_named("evaluate"), "balancer", {}, {"snapshot_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="run the snapshot stage first"):
        pipeline.run_stage("evaluate", "balancer", {}, tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="run the promote stage first"):
        pipeline.run_stage("transfer", "balancer", {}, tmp_path / "empty")


def test_the_transfer_stage_of_a_primitive_not_opted_in_says_so_and_does_nothing(project, tmp_path):
    (tmp_path / "promotion.json").write_text('{"decision": {"promoted": true}}')
    value = pipeline.run_stage("transfer", "balancer", {"transfer": {"primitives": []}, "primitive_configs": {}}, tmp_path)
    assert "not in transfer.primitives" in value["skipped"]
    assert "not in transfer.primitives" in (tmp_path / "transfer.json").read_text()
