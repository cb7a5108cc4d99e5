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
    from aiprim.flows import config, steps

    cfg = config.load("small")
    steps.validate("balancer", balancer_snapshot, cfg)
    env = {**os.environ, "AIPRIM_PROFILE": "small"}
    train = [sys.executable, "-m", "aiprim.flows.cli", "train", "balancer", str(balancer_snapshot), "--trials", "0"]
    # Long enough to be killed mid-way: the small profile with many epochs, in a config folder of its own. The kill
    # lands within an epoch or two of the first checkpoint, so 12 leave a wide margin; the rerun trains all the
    # epochs after the kill (with 40 it spent half a minute on them).
    cfg_dir = project / "configs"
    cfg_dir.mkdir()
    from aiprim.settings import packaged_configs

    pipeline = (packaged_configs() / "pipeline.yaml").read_text()
    assert "train: {max_epochs: 6," in pipeline, "the small profile's epochs moved: update this test"
    max_epochs = 12
    (cfg_dir / "pipeline.yaml").write_text(pipeline.replace("train: {max_epochs: 6,", f"train: {{max_epochs: {max_epochs},"))
    (cfg_dir / "balancer.yaml").write_text((packaged_configs() / "balancer.yaml").read_text())
    env["AIPRIM_CONFIG_DIR"] = str(cfg_dir)

    proc = subprocess.Popen(train, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # last.ckpt is rewritten after every epoch: its first appearance means training is running, one epoch in
    # (it used to appear only once fit was done, so the kill raced the end of training).
    checkpoints = project / "checkpoints" / "balancer"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(checkpoints.glob("*/last.ckpt")):
        time.sleep(0.05)
    assert proc.poll() is None and list(checkpoints.glob("*/last.ckpt")), proc.communicate(timeout=60)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, err)  # 128 + SIGTERM, as `aiprim run` stopped so exits
    assert err.rstrip().splitlines()[-1] == "aiprim: terminated", err

    import torch

    (last,) = checkpoints.glob("*/last.ckpt")
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert killed_at < max_epochs - 1, f"the kill came after the last epoch ({killed_at}): nothing left to resume"

    from aiprim.registry._store import configure, experiment

    client = configure()
    runs = client.search_runs([experiment("balancer")], "tags.`aiprim.step` = 'train'")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not client.search_registered_models(), "nothing registered from a failed run"

    # The rerun picks up the checkpoint: it trains only the epochs after it, up to the end.
    result = subprocess.run(train, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr
    (rerun,) = client.search_runs([experiment("balancer")], "tags.`aiprim.step` = 'train' and attributes.status = 'FINISHED'")
    epochs = sorted(m.step for m in client.get_metric_history(rerun.info.run_id, "val/loss"))
    assert epochs, "the rerun logged no epochs"
    assert epochs[0] == killed_at + 1, f"the rerun started at epoch {epochs[0]}, not right after the checkpoint's {killed_at}"
    assert epochs[-1] == max_epochs - 1, f"the rerun stopped at epoch {epochs[-1]}"


def test_sigterm_passes_through_a_library_that_wraps_what_it_catches():
    """SIGTERM can land in a library that re-raises what it catches as its own error (MLflow's artifact logging
    wraps every Exception): Terminated is not an Exception, so it reaches the command's handler as itself. The
    handler is installed only where SIGTERM still has Python's default, and the default comes back after."""
    from aiprim.flows._interrupt import Terminated, sigterm_raises

    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with pytest.raises(Terminated), sigterm_raises():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        except Exception as error:
            raise RuntimeError(f"artifact upload failed: {error}") from error
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
