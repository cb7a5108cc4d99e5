"""A balancer snapshot's tables under names never generated: the same deployment, called otherwise."""

from __future__ import annotations

import numpy as np
import pandas as pd


def renamed(tables: dict, seed: int = 1) -> dict:
    """Every name replaced by a bijection to names never generated, and the rows of both tables shuffled."""
    rng = np.random.default_rng(seed)
    servers, requests = tables["servers"].copy(), tables["requests"].copy()

    def rename(values: pd.Series, prefix: str) -> pd.Series:
        uniques = pd.unique(values.dropna())
        mapping = dict(zip(uniques, [f"{prefix}{i}" for i in rng.permutation(len(uniques))]))
        return values.map(lambda v: mapping.get(v, v) if v is not None and v == v else None)

    classes = pd.unique(servers["server_class"])
    class_map = dict(zip(classes, [f"tier-{i}" for i in rng.permutation(len(classes))]))
    servers["server_class"] = servers["server_class"].map(class_map)
    requests["requires_class"] = requests["requires_class"].map(lambda v: class_map.get(v) if v is not None else None)
    server_map = dict(zip(servers["server_id"], [f"node-{i}" for i in rng.permutation(len(servers))]))
    servers["server_id"] = servers["server_id"].map(server_map)
    requests["server_id"] = requests["server_id"].map(server_map)
    servers["zone"] = rename(servers["zone"], "rack-")
    for column, prefix in (("request_class", "kind-"), ("tenant", "team-"), ("key", "item-"),
                           ("affinity_group", "pin-"), ("anti_affinity_group", "spread-")):
        requests[column] = rename(requests[column], prefix)
    return {"servers": servers.sample(frac=1.0, random_state=2).reset_index(drop=True),
            "requests": requests.sample(frac=1.0, random_state=3).reset_index(drop=True)}
