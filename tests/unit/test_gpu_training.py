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
