"""The balancer's deployment descriptor: what a fleet and its traffic *are*, from measured quantities only.

A vector of fixed length computed from a snapshot's ``servers`` and
``requests`` tables: fleet size and zones, the fleet's capacity mix and how
uneven it is, the traffic's cost mix against that capacity, how concentrated
demand is on classes and on keys, and which fractions of it carry affinity,
anti-affinity or class requirements. Names (of servers, classes, zones,
tenants, keys) are only used to group rows, never read, so renaming any of
them, or reordering rows, leaves the descriptor unchanged: a deployment whose
names were never seen is described by what its servers and requests are.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._fleet import CAPACITY_COLUMNS, COST_COLUMNS, Units, optional_column

FIELDS: tuple[str, ...] = (
    "log_servers", "log_zones", "log_server_groups",
    "cap_share_cpu", "cap_share_mem", "cap_share_io",
    "cap_log_std_cpu", "cap_log_std_mem", "cap_log_std_io",
    "cap_shape_spread", "cap_largest_server_share_x_n",
    "demand_share_cpu", "demand_share_mem", "demand_share_io",
    "demand_over_cap_cpu", "demand_over_cap_mem", "demand_over_cap_io",
    "dominant_cpu", "dominant_mem", "dominant_io",
    "log_request_classes", "class_share_max", "class_share_entropy", "class_shape_spread",
    "log_request_size_over_server", "request_size_log_std",
    "hottest_unit_share_x_servers", "top_1pct_unit_share", "top_10pct_unit_share", "log_units_per_server",
    "zipf_slope",
    "affinity_fraction", "anti_affinity_fraction", "required_fraction", "required_demand_share",
    "required_capacity_share", "log_tenants",
)


def describe(tables: dict) -> np.ndarray:
    """The descriptor (``len(FIELDS)`` floats) of the deployment a balancer snapshot's tables come from."""
    servers, requests = tables["servers"], tables["requests"]
    capacity = servers[list(CAPACITY_COLUMNS)].to_numpy(dtype=np.float64)
    costs = requests[list(COST_COLUMNS)].to_numpy(dtype=np.float64)
    n_servers = len(servers)
    out: dict[str, float] = {
        "log_servers": np.log(n_servers),
        "log_zones": np.log(servers["zone"].nunique()),
        "log_server_groups": np.log(servers["server_class"].nunique()),
    }
    cap_total = capacity.sum(axis=0)
    cap_share = cap_total / cap_total.sum()
    out.update(zip(FIELDS[3:6], cap_share))
    out.update(zip(FIELDS[6:9], np.log(capacity).std(axis=0)))
    shape = capacity / capacity.sum(axis=1, keepdims=True)
    out["cap_shape_spread"] = float(np.abs(shape - cap_share).sum(axis=1).mean())
    size = capacity.sum(axis=1)
    out["cap_largest_server_share_x_n"] = float(size.max() / size.sum() * n_servers)

    demand_total = costs.sum(axis=0)
    demand_share = demand_total / max(demand_total.sum(), 1e-300)
    out.update(zip(FIELDS[11:14], demand_share))
    out.update(zip(FIELDS[14:17], np.log(np.maximum(demand_share, 1e-6) / cap_share)))
    request_size = costs.sum(axis=1)
    dominant = costs.argmax(axis=1)
    weights = request_size / max(request_size.sum(), 1e-300)
    out.update(zip(FIELDS[17:20], np.bincount(dominant, weights=weights, minlength=3)))

    class_code, class_names = pd.factorize(requests["request_class"].to_numpy(dtype=object))
    class_demand = np.stack([np.bincount(class_code, weights=costs[:, d], minlength=len(class_names)) for d in range(3)], 1)
    class_share = class_demand.sum(axis=1) / max(class_demand.sum(), 1e-300)
    class_shape = class_demand / np.maximum(class_demand.sum(axis=1, keepdims=True), 1e-300)
    out["log_request_classes"] = np.log(len(class_names))
    out["class_share_max"] = float(class_share.max())
    positive = class_share[class_share > 0]
    out["class_share_entropy"] = float(-(positive * np.log(positive)).sum())
    out["class_shape_spread"] = float((class_share * np.abs(class_shape - demand_share).sum(axis=1)).sum())
    positive_size = np.maximum(request_size, 1e-12)
    out["log_request_size_over_server"] = float(np.log(positive_size.mean() / size.mean()))
    out["request_size_log_std"] = float(np.log(positive_size).std())

    units = Units.from_frame(requests)
    unit_size = np.sort(units.demand.sum(axis=1))[::-1]
    unit_share = unit_size / max(unit_size.sum(), 1e-300)
    n_units = len(unit_share)
    out["hottest_unit_share_x_servers"] = float(unit_share[0] * n_servers)
    out["top_1pct_unit_share"] = float(unit_share[: max(1, n_units // 100)].sum())
    out["top_10pct_unit_share"] = float(unit_share[: max(1, n_units // 10)].sum())
    out["log_units_per_server"] = float(np.log(n_units / n_servers))
    out["zipf_slope"] = _zipf_slope(np.sort(units.n_requests)[::-1])

    affinity = pd.notna(optional_column(requests, "affinity_group"))
    anti = pd.notna(optional_column(requests, "anti_affinity_group"))
    required = optional_column(requests, "requires_class")
    has_requirement = pd.notna(required)
    out["affinity_fraction"] = float(affinity.mean())
    out["anti_affinity_fraction"] = float(anti.mean())
    out["required_fraction"] = float(has_requirement.mean())
    out["required_demand_share"] = float(weights[has_requirement].sum())
    # The capacity open to constrained requests, as a share of the fleet's, weighted by their demand.
    capacity_of_class = pd.Series(size, index=servers["server_class"].to_numpy(dtype=object)).groupby(level=0).sum() / size.sum()
    if has_requirement.any():
        demand_by_class = pd.Series(weights[has_requirement], index=required[has_requirement]).groupby(level=0).sum()
        open_share = capacity_of_class.reindex(demand_by_class.index).fillna(0.0).to_numpy()
        out["required_capacity_share"] = float((open_share * demand_by_class.to_numpy()).sum() / demand_by_class.sum())
    else:
        out["required_capacity_share"] = 1.0
    out["log_tenants"] = float(np.log(requests["tenant"].nunique()))
    return np.array([float(out[name]) for name in FIELDS], dtype=np.float64)


def _zipf_slope(counts_descending: np.ndarray) -> float:
    """Slope of log frequency against log rank over the head of the distribution (0: uniform keys)."""
    head = counts_descending[: max(2, min(len(counts_descending), 1000))].astype(np.float64)
    if len(head) < 2 or head[0] == head[-1]:
        return 0.0
    rank = np.log(np.arange(1, len(head) + 1))
    return float(-np.polyfit(rank, np.log(np.maximum(head, 1.0)), 1)[0])
