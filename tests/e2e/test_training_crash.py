"""A training run that is killed is marked failed in MLflow, promotes nothing,
and the rerun resumes from the last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def test_killed_training_is_failed_then_resumed(project, balancer_snapshot):
    from flows import config, steps

    cfg = config.load("small")
    steps.validate("balancer", balancer_snapshot, cfg)
    env = {**os.environ, "AIPRIM_PROFILE": "small"}
    train = [sys.executable, "-m", "flows.cli", "train", "balancer", str(balancer_snapshot), "--trials", "0"]
    # Long enough to be killed mid-way: the small profile with many epochs, in a config folder of its own.
    cfg_dir = project / "configs"
    cfg_dir.mkdir()
    from flows.config import REPO

    pipeline = (REPO / "configs" / "pipeline.yaml").read_text()
    assert "train: {max_epochs: 6," in pipeline, "the small profile's epochs moved: update this test"
    (cfg_dir / "pipeline.yaml").write_text(pipeline.replace("train: {max_epochs: 6,", "train: {max_epochs: 150,"))
    (cfg_dir / "balancer.yaml").write_text((REPO / "configs" / "balancer.yaml").read_text())
    env["AIPRIM_CONFIG_DIR"] = str(cfg_dir)

    proc = subprocess.Popen(train, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = project / "checkpoints" / "balancer"
    deadline = time.time() + 120
    while time.time() < deadline and not list(checkpoints.glob("*/last.ckpt")):
        time.sleep(0.2)
    assert list(checkpoints.glob("*/last.ckpt")), proc.communicate(timeout=30)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "aiprim: error: training interrupted by signal" in err, err

    from registry._store import configure, experiment

    client = configure()
    runs = client.search_runs([experiment("balancer")], "tags.`aiprim.step` = 'train'")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not client.search_registered_models(), "nothing registered from a failed run"

    # The rerun picks up the checkpoint (fewer epochs left to run).
    result = subprocess.run(train, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr
