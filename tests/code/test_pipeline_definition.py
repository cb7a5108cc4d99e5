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
