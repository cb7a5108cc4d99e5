"""The Lightning GPU path: runs where a CUDA device is present, skips cleanly elsewhere (CI has none)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_balancer_trains_on_gpu(balancer_tables, tmp_path):
    import lightning as L

    from aiprim import primitives

    prim = primitives.get("balancer")
    train, held_out = prim.split(balancer_tables, 0.2)
    params = prim.params({"max_epochs": 2, "scenarios_per_epoch": 8})
    datamodule = prim.build_datamodule(train, params, seed=0)
    module = prim.build_module(datamodule, params)
    trainer = L.Trainer(max_epochs=2, accelerator="gpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule)
    assert trainer.strategy.root_device.type == "cuda"
    prim.export_runtime(module, datamodule, tmp_path)  # the exported runtime is CPU/numpy regardless
    routed = prim.load_runtime(tmp_path).route(held_out["requests"], held_out["servers"])
    assert len(routed) == len(held_out["requests"])


def _fit_with_the_pipeline_trainer(balancer_tables, lightning: dict, **trainer_kwargs):
    """Fit a small balancer with the trainer the pipeline's train step builds (``steps._trainer``), and
    return (weights before, module after, trainer, held-out tables, primitive, datamodule)."""
    import torch

    from aiprim import primitives
    from aiprim.flows import steps

    prim = primitives.get("balancer")
    train, held_out = prim.split(balancer_tables, 0.2)
    params = prim.params({"max_epochs": 2, "scenarios_per_epoch": 8})
    datamodule = prim.build_datamodule(train, params, seed=0)
    module = prim.build_module(datamodule, params)
    before = [p.detach().clone() for p in module.parameters()]
    trainer = steps._trainer({"lightning": lightning}, 2, [], **trainer_kwargs)
    trainer.fit(module, datamodule)
    assert any(not torch.equal(b, a.detach().cpu()) for b, a in zip(before, module.parameters())), "no weight moved"
    return module, trainer, held_out, prim, datamodule


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_the_pipeline_trainer_fits_on_gpu_with_its_callbacks(balancer_tables, tmp_path):
    """``steps._trainer`` as ``aiprim train`` builds it on a GPU machine (accelerator auto): epoch progress, the
    interrupt check and the resumable last.ckpt are callbacks that run on the GPU path too."""
    module, trainer, held_out, prim, datamodule = _fit_with_the_pipeline_trainer(
        balancer_tables, {"accelerator": "auto"}, checkpoint_dir=tmp_path / "checkpoints")
    assert trainer.strategy.root_device.type == "cuda"
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    prim.export_runtime(module, datamodule, tmp_path / "runtime")
    assert len(prim.load_runtime(tmp_path / "runtime").route(held_out["requests"], held_out["servers"])) == len(held_out["requests"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_ddp_on_the_gpu_brings_the_trained_weights_back(balancer_tables, tmp_path):
    """``lightning: {strategy: ddp}`` on a GPU: a spawned process trains on the device over NCCL and the
    weights it trained come back to this process, which exports them. One process per GPU: a lent machine has one."""
    module, trainer, held_out, prim, datamodule = _fit_with_the_pipeline_trainer(
        balancer_tables, {"accelerator": "gpu", "devices": 1, "strategy": "ddp"})
    assert type(trainer.strategy).__name__ == "DDPStrategy" and trainer.strategy.root_device.type == "cuda"
    prim.export_runtime(module, datamodule, tmp_path / "runtime")
    assert len(prim.load_runtime(tmp_path / "runtime").route(held_out["requests"], held_out["servers"])) == len(held_out["requests"])
