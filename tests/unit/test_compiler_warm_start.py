"""Warm-starting the cost model from a trained runtime: same predictions before any step, only the last layers move."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from aiprim.primitives.compiler._features import featurize_rows
from aiprim.primitives.compiler._model import CostDataModule, CostModule, export_weights, warm_start
from aiprim.primitives.compiler._runtime import CompilerRuntime
from aiprim.primitives.compiler._space import sample_schedules, schedule_json

SHAPE = dict(hidden=16, depth=3, dropout=0.0, members=3, views="all,all,compact")


def _tables(seed: int, n_tasks: int = 4, schedules: int = 12) -> dict:
    """Matmul tasks with made-up runtimes: enough to standardise and to take optimizer steps on."""
    rng = np.random.default_rng(seed)
    tasks, rows = [], []
    for t in range(n_tasks):
        m, n, k = (int(v) for v in rng.choice([32, 64, 128, 256], size=3))
        task_id = f"matmul-{m}x{n}x{k}-{t}"
        tasks.append({"task_id": task_id, "kernel": "matmul", "shape": json.dumps({"M": m, "N": n, "K": k}),
                      "target": "x86_64-test-2c", "l1_bytes": 32768, "l2_bytes": 524288})
        for schedule in sample_schedules("matmul", schedules, rng):
            rows.append({"task_id": task_id, "schedule": schedule_json(schedule), "runtime_s": float(rng.uniform(1e-4, 1e-2)),
                         "error": None, "time_limit_s": 0.5})
    tasks = pd.DataFrame(tasks).astype({"l1_bytes": "Int64", "l2_bytes": "Int64"})
    return {"tasks": tasks, "measurements": pd.DataFrame(rows)}


def _module(datamodule: CostDataModule, seed: int) -> CostModule:
    torch.manual_seed(seed)
    return CostModule(datamodule.feature_mean.tolist(), datamodule.feature_std.tolist(), datamodule.target_mean,
                      datamodule.target_std, **SHAPE)


def _source_runtime() -> CompilerRuntime:
    """A runtime as the primitive exports it (untrained weights do: only the copy is under test)."""
    data = CostDataModule(**_tables(0))
    module = _module(data, seed=1)
    meta = {"feature_mean": list(module.hparams.feature_mean), "feature_std": list(module.hparams.feature_std),
            "target_mean": module.hparams.target_mean, "target_std": module.hparams.target_std,
            "member_columns": [list(c) for c in module.net.columns]}
    return CompilerRuntime(export_weights(module), json.loads(json.dumps(meta)))  # as saved and loaded: through JSON


def _warm(runtime: CompilerRuntime, tables: dict, trainable_layers):
    data = CostDataModule(**tables, scaling=runtime.meta)
    return data, warm_start(_module(data, seed=2), runtime.weights, runtime.meta, trainable_layers)


def _linear_layers(module: CostModule) -> list[list[torch.nn.Linear]]:
    return [[m for m in member if isinstance(m, torch.nn.Linear)] for member in module.net.members]


def test_warm_started_module_predicts_what_the_runtime_predicts():
    runtime = _source_runtime()
    target = _tables(5)  # another "machine": other shapes and runtimes, standardised with the source's statistics
    data, module = _warm(runtime, target, trainable_layers=1)
    x = featurize_rows(target["tasks"], target["measurements"])
    module.eval()
    with torch.no_grad():
        scaled = torch.from_numpy(((x - data.feature_mean) / data.feature_std).astype(np.float32))
        predicted = module.net(scaled).mean(dim=0).numpy().astype(np.float64) * data.target_std + data.target_mean
    np.testing.assert_allclose(predicted, runtime.score_features(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("trainable_layers", [1, 2])
def test_only_the_last_layers_train(trainable_layers):
    runtime = _source_runtime()
    data, module = _warm(runtime, _tables(5), trainable_layers)
    before = [[(layer.weight.detach().clone(), layer.bias.detach().clone()) for layer in member] for member in _linear_layers(module)]
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()
    for _ in range(3):
        for batch in data.train_dataloader():
            optimizer.zero_grad()
            module._losses(batch)[2].backward()
            optimizer.step()
    for member, member_before in zip(_linear_layers(module), before):
        for i, (layer, (weight, bias)) in enumerate(zip(member, member_before)):
            changed = not (torch.equal(layer.weight, weight) and torch.equal(layer.bias, bias))
            assert changed == (i >= len(member) - trainable_layers), f"layer {i} of {len(member)}"


def test_warm_start_refuses_a_module_on_another_scale_or_shape():
    runtime = _source_runtime()
    own_scale = CostDataModule(**_tables(5))  # standardised with its own rows, not the runtime's
    with pytest.raises(ValueError, match="scaling=runtime_meta"):
        warm_start(_module(own_scale, seed=2), runtime.weights, runtime.meta, 1)
    data = CostDataModule(**_tables(5), scaling=runtime.meta)
    torch.manual_seed(0)
    deeper = CostModule(data.feature_mean.tolist(), data.feature_std.tolist(), data.target_mean, data.target_std,
                        **{**SHAPE, "depth": 4})
    with pytest.raises(ValueError, match="linear layers"):
        warm_start(deeper, runtime.weights, runtime.meta, 1)
    torch.manual_seed(0)
    fewer = CostModule(data.feature_mean.tolist(), data.feature_std.tolist(), data.target_mean, data.target_std,
                       **{**SHAPE, "members": 2, "views": "all"})
    with pytest.raises(ValueError, match="members"):
        warm_start(fewer, runtime.weights, runtime.meta, 1)


@pytest.mark.parametrize("val_fraction, validation_tasks", [(0.0, 0), (0.15, 1), (0.5, 3)])
def test_val_fraction_holds_out_whole_tasks_and_zero_holds_out_none(val_fraction, validation_tasks):
    data = CostDataModule(**_tables(3, n_tasks=6), val_fraction=val_fraction)
    train_tasks, val_tasks = set(data.train_part[3].tolist()), set(data.val_part[3].tolist())
    assert len(train_tasks) == 6 - validation_tasks
    # Without validation tasks the validation loop reads the training tasks (Lightning needs one).
    assert val_tasks == (train_tasks if validation_tasks == 0 else val_tasks - train_tasks)
    assert len(val_tasks) == (6 if validation_tasks == 0 else validation_tasks)
