"""The cache sizes of the machine this process runs on, for the cost model's ``fits_l1``/``fits_l2`` features.

Standard library only (no subprocess, no compiler): the runtime calls it on
its hot path, and its import must stay as light as numpy's.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ._features import CACHE_COLUMNS, FALLBACK_L1_BYTES, FALLBACK_L2_BYTES
from ._space import FAMILIES

SYSFS_CACHES = "/sys/devices/system/cpu/cpu0/cache"
_UNITS = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def _size_bytes(text: str) -> int | None:
    """``32K``, ``32768K``, ``1M`` or a plain byte count; None for anything else."""
    text = text.strip().upper()
    scale = _UNITS.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in _UNITS else text
    return int(digits) * scale if digits.isdigit() and int(digits) > 0 else None


@functools.lru_cache(maxsize=8)
def _read_caches(root: str) -> tuple[int, int]:
    found = {}
    try:
        entries = sorted(Path(root).glob("index*"))
    except OSError:
        entries = []
    for entry in entries:
        try:
            level = int((entry / "level").read_text())
            kind = (entry / "type").read_text().strip()
            size = _size_bytes((entry / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and size and level not in found:
            found[level] = size
    return found.get(1, FALLBACK_L1_BYTES), found.get(2, FALLBACK_L2_BYTES)


def cpu_caches(root: str = SYSFS_CACHES) -> dict:
    """cpu0's L1 data and L2 sizes in bytes, e.g. ``{"l1_bytes": 32768, "l2_bytes": 524288}``.

    Read from Linux's sysfs once per process; a level that cannot be read (another
    OS, no sysfs in a container) gets the fallback the features used before.
    """
    l1, l2 = _read_caches(str(root))
    return {"l1_bytes": l1, "l2_bytes": l2}


def recorded_caches(tasks, kernel: str) -> tuple[int, int] | None:
    """The ``(l1_bytes, l2_bytes)`` a snapshot's tasks table recorded for its ``kernel`` tasks, which one machine
    measured: the caches to predict for when deciding for that machine, not this one. None where not recorded."""
    rows = tasks.loc[tasks["kernel"] == kernel]
    if not set(CACHE_COLUMNS) <= set(rows.columns) or rows[list(CACHE_COLUMNS)].isna().any().any():
        return None
    recorded = rows[list(CACHE_COLUMNS)].drop_duplicates()
    if len(recorded) != 1:
        raise ValueError(f"the {kernel} tasks record {len(recorded)} different cache sizes: more than one machine measured them")
    return int(recorded.iloc[0]["l1_bytes"]), int(recorded.iloc[0]["l2_bytes"])


def machine_caches(kernel: str) -> tuple[int, int] | None:
    """``caches`` for featurising ``kernel`` on this machine: its CPU caches, None (the fallback) for GPU families."""
    if FAMILIES[kernel].target != "cpu":
        return None
    caches = cpu_caches()
    return caches["l1_bytes"], caches["l2_bytes"]
