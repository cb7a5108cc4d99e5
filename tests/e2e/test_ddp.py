"""Lightning DDP on CPU: ``lightning: {devices: 2, strategy: ddp}`` trains through the pipeline in two processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

# The small profile's training, with the kernel routing every class: with the split LP (the default), every
# class of the training telemetry routes by the same split whatever DDP trained, and the comparison below would
# compare two copies of it.
SMALL_TRAIN = {"max_epochs": 6, "scenarios_per_epoch": 16, "hot_units": 1000, "lp_split": False}


def _config_dir_with(tmp_path, lightning: dict):
    from aiprim.settings import packaged_configs

    configs = tmp_path / "configs"
    shutil.copytree(packaged_configs(), configs, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    pipeline = yaml.safe_load((configs / "pipeline.yaml").read_text())
    pipeline["lightning"] = {**pipeline["lightning"], **lightning}
    pipeline["profiles"]["small"]["balancer"]["train"] = SMALL_TRAIN
    (configs / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    return configs


@pytest.mark.slow
@pytest.mark.stack  # minutes of two processes training twice: .ci/run's scale-out step (benchmarks/scale_out.py measures it)
def test_ddp_on_two_cpu_processes_trains_a_model_as_good_as_one_process(project, balancer_snapshot, balancer_tables, tmp_path):
    configs = _config_dir_with(tmp_path, {"accelerator": "cpu", "devices": 2, "strategy": "ddp"})
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "AIPRIM_OPTUNA_STORAGE")}
    env.update(AIPRIM_HOME=str(project), PREFECT_HOME=str(project / ".prefect"), AIPRIM_CONFIG_DIR=str(configs))
    result = subprocess.run([sys.executable, "-m", "aiprim.flows.cli", "train", "balancer", str(balancer_snapshot),
                             "--trials", "0", "--profile", "small"], cwd=project, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    trained = json.loads(result.stdout)

    from mlflow import MlflowClient

    from aiprim.settings import tracking_uri

    client = MlflowClient(tracking_uri())
    run = client.get_run(trained["run_id"])
    assert run.data.params["max_epochs"] == "6"
    # Logged by the first process only: one value per epoch, not one per process.
    assert [m.step for m in client.get_metric_history(trained["run_id"], "val/loss")] == list(range(6))
    names = [r.info.run_name for r in client.search_runs([run.info.experiment_id])]
    assert sum(n.startswith("train-") for n in names) == 1, names  # no run of its own from a spawned process
    assert all(n.startswith(("train-", "evaluate-")) for n in names), names

    from aiprim import primitives

    prim = primitives.get("balancer")
    train, held_out = prim.split(balancer_tables, 0.2)
    single = prim.train_runtime(train, SMALL_TRAIN, tmp_path / "single", seed=0)
    single_report = prim.evaluate(single, held_out, {"baselines": True, "disruption_trials": 1, "training_tables": train})
    ddp_value = trained["metrics"]["peak_to_mean"]
    single_value = single_report.candidates["learned"]["peak_to_mean"]
    capacity_weighted = single_report.baselines["weighted_rendezvous"]["peak_to_mean"]
    # Two processes each see half the scenarios of an epoch (half the optimizer steps); the kernel is
    # still within 10% of one process's and well ahead of routing by capacity alone.
    assert ddp_value <= single_value * 1.10, (ddp_value, single_value)
    assert ddp_value < capacity_weighted * 0.8, (ddp_value, capacity_weighted)
