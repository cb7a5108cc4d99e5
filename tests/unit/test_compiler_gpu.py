"""The compiler source's GPU part: Triton matmul configurations measured on a CUDA GPU; skips cleanly elsewhere."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.gpu


def test_without_a_gpu_the_triton_part_says_why():
    from aiprim.primitives.compiler._triton import gpu_available

    why_not = gpu_available()
    if why_not is not None:
        assert why_not in ("PyTorch is not installed", "no CUDA GPU on this machine", "Triton is not installed")


def test_gpu_tasks_without_a_gpu_are_recorded_as_not_measured(tmp_path):
    from aiprim.primitives.compiler._source import generate
    from aiprim.primitives.compiler._triton import gpu_available

    if gpu_available() is None:
        pytest.skip("a CUDA GPU is present")
    tasks = pd.DataFrame([{"task_id": "t", "kernel": "triton_matmul", "shape": json.dumps({"M": 256, "N": 256, "K": 256})}])
    tasks.to_parquet(tmp_path / "tasks.parquet")
    tables, extra = generate({"tasks": str(tmp_path / "tasks.parquet"), "schedules_per_task": 3}, seed=0)
    m = tables["measurements"]
    assert len(m) == 3 and m["runtime_s"].isna().all() and m["error"].str.startswith("not measured: ").all()


def test_triton_matmul_configurations_are_verified_and_timed(tmp_path):
    from aiprim.primitives.compiler._source import generate
    from aiprim.primitives.compiler._triton import gpu_available

    why_not = gpu_available()
    if why_not is not None:
        pytest.skip(why_not)
    tables, extra = generate({"families": [], "gpu": True, "gpu_tasks": 2, "schedules_per_task": 12}, seed=0)
    assert "+cuda-sm" in extra["target"] or extra["target"].startswith("cuda-sm") or "cuda-sm" in extra["target"]
    m = tables["measurements"]
    assert len(m) == 24 and set(tables["tasks"]["kernel"]) == {"triton_matmul"}
    ok = m["runtime_s"].notna()
    assert ok.sum() >= 6, m["error"].value_counts()
    assert (m.loc[ok, "repeats"] >= 5).all() and np.isfinite(m.loc[ok, "runtime_std_s"]).all()
    assert m.loc[~ok, "error"].notna().all()
