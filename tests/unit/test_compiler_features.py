"""The cache sizes the features compare a tile's working set with: read from sysfs, recorded per task, or the fallback."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aiprim.primitives.compiler._features import (FALLBACK_L1_BYTES, FALLBACK_L2_BYTES, FEATURE_NAMES, featurize_family,
                                                  featurize_rows)
from aiprim.primitives.compiler._machine import cpu_caches, machine_caches
from aiprim.primitives.compiler._space import schedule_json

FITS_L1, FITS_L2 = FEATURE_NAMES.index("fits_l1"), FEATURE_NAMES.index("fits_l2")
SHAPE = {"M": 256, "N": 256, "K": 256}
# Working set 4 * (32*32 + 32*128 + 32*128) = 36 KiB: over this VM's 32 KiB L1d, under the 48 KiB fallback.
BETWEEN = {"tile_m": 32, "tile_n": 128, "tile_k": 32, "order": "ikj", "unroll": 1, "vectorize": 1, "threads": 1}


def _sysfs(root, entries) -> str:
    for i, (level, kind, size) in enumerate(entries):
        folder = root / f"index{i}"
        folder.mkdir(parents=True)
        (folder / "level").write_text(f"{level}\n")
        (folder / "type").write_text(f"{kind}\n")
        (folder / "size").write_text(f"{size}\n")
    return str(root)


def test_cpu_caches_reads_data_and_unified_levels_with_their_suffixes(tmp_path):
    root = _sysfs(tmp_path / "cache", [(1, "Data", "32K"), (1, "Instruction", "64K"), (2, "Unified", "1M"),
                                       (3, "Unified", "32768K")])
    assert cpu_caches(root) == {"l1_bytes": 32 * 1024, "l2_bytes": 1024 * 1024}


def test_cpu_caches_reads_plain_bytes_and_large_kilobyte_counts(tmp_path):
    root = _sysfs(tmp_path / "cache", [(1, "Data", "49152"), (2, "Unified", "2048K")])
    assert cpu_caches(root) == {"l1_bytes": 48 * 1024, "l2_bytes": 2 * 1024 * 1024}


def test_cpu_caches_falls_back_for_what_it_cannot_read(tmp_path):
    assert cpu_caches(str(tmp_path / "absent")) == {"l1_bytes": FALLBACK_L1_BYTES, "l2_bytes": FALLBACK_L2_BYTES}
    only_l1 = _sysfs(tmp_path / "l1", [(1, "Data", "32K"), (2, "Unified", "lots")])
    assert cpu_caches(only_l1) == {"l1_bytes": 32 * 1024, "l2_bytes": FALLBACK_L2_BYTES}


def test_the_runtime_uses_this_machines_caches_for_cpu_families_only():
    caches = cpu_caches()
    assert machine_caches("matmul") == (caches["l1_bytes"], caches["l2_bytes"])
    assert machine_caches("triton_matmul") is None


def _tables(l1, l2):
    tasks = pd.DataFrame({"task_id": ["a", "b"], "kernel": ["matmul"] * 2, "shape": [json.dumps(SHAPE)] * 2})
    if l1 is not None:
        tasks["l1_bytes"] = pd.array(l1, dtype="Int64")
        tasks["l2_bytes"] = pd.array(l2, dtype="Int64")
    measurements = pd.DataFrame({"task_id": ["a", "b", "a"], "schedule": [schedule_json(BETWEEN)] * 3})
    return tasks, measurements


def test_fits_l1_compares_the_footprint_with_each_tasks_recorded_cache():
    x = featurize_rows(*_tables([32 * 1024, None], [512 * 1024, None]))
    assert x[:, FITS_L1].tolist() == [0.0, 1.0, 0.0]  # task b recorded no size: the fallback
    assert x[:, FITS_L2].tolist() == [1.0, 1.0, 1.0]


def test_snapshots_without_the_columns_use_the_fallback():
    old = featurize_rows(*_tables(None, None))
    assert old[:, FITS_L1].tolist() == [1.0, 1.0, 1.0]
    recorded = featurize_rows(*_tables([32 * 1024, None], [512 * 1024, None]))
    others = [i for i in range(len(FEATURE_NAMES)) if i != FITS_L1]
    assert np.array_equal(old[:, others], recorded[:, others])  # only the cache comparison moves


@pytest.mark.parametrize("caches, expected", [(None, [1.0, 1.0]), ((32 * 1024, 512 * 1024), [0.0, 0.0]),
                                               ((np.array([32 * 1024, np.nan]), np.array([512 * 1024, np.nan])), [0.0, 1.0])])
def test_featurize_family_takes_scalar_or_per_row_caches(caches, expected):
    knobs = {k: np.array([v, v]) for k, v in BETWEEN.items()}
    assert featurize_family("matmul", SHAPE, knobs, caches)[:, FITS_L1].tolist() == expected
