"""Small hand-made fleets and request batches for the balancer's unit tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_servers(classes=("general",) * 4, zones=None, caps=None) -> pd.DataFrame:
    n = len(classes)
    zones = zones or [f"z{i % 2}" for i in range(n)]
    caps = np.ones((n, 3)) if caps is None else np.asarray(caps, dtype=float)
    return pd.DataFrame(
        {
            "server_id": [f"s{i}" for i in range(n)],
            "server_class": list(classes),
            "zone": list(zones),
            "cap_cpu": caps[:, 0],
            "cap_mem": caps[:, 1],
            "cap_io": caps[:, 2],
        }
    )


def make_requests(keys, requires=None, affinity=None, anti=None, replica=None, costs=None) -> pd.DataFrame:
    n = len(keys)
    costs = np.ones((n, 3)) if costs is None else np.asarray(costs, dtype=float)
    return pd.DataFrame(
        {
            "ts": np.arange(n, dtype=float),
            "key": list(keys),
            "tenant": "t0",
            "request_class": "read",
            "requires_class": pd.array(requires if requires is not None else [None] * n, dtype="string"),
            "affinity_group": pd.array(affinity if affinity is not None else [None] * n, dtype="string"),
            "anti_affinity_group": pd.array(anti if anti is not None else [None] * n, dtype="string"),
            "replica": pd.array(replica if replica is not None else [None] * n, dtype="Int32"),
            "cost_cpu": costs[:, 0],
            "cost_mem": costs[:, 1],
            "cost_io": costs[:, 2],
        }
    )


def mixed_batch(n_keys=400) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plain keys, affinity groups, 3-replica anti-affinity groups and a gpu-only slice."""
    servers = make_servers(
        classes=["general"] * 8 + ["gpu"] * 3, zones=[f"z{i % 3}" for i in range(11)], caps=np.linspace(1, 3, 33).reshape(11, 3)
    )
    # A key's group never changes between its requests, as in real telemetry.
    key = np.arange(3 * n_keys) % n_keys
    requires = [None if (k // 3 if 300 <= k < 360 else k) % 10 else "gpu" for k in key]  # replicas of a group agree
    affinity = [f"a{k % 20}" if 200 <= k < 300 else None for k in key]
    anti = [f"x{k // 3}" if 300 <= k < 360 else None for k in key]
    replica = [k % 3 if 300 <= k < 360 else None for k in key]
    return make_requests([f"k{k}" for k in key], requires, affinity, anti, replica), servers
