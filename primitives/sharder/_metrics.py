"""The sharder metrics of TELEMETRY.md, for anything with ``place(items, shards)``.

All placements are scored on the same rows and trace: ``distributed_txn_rate``
(transactions whose partitioned rows sit on more than one shard: each pays a
distributed commit), ``shards_per_txn``, ``peak_to_mean_load`` (accesses and
bytes per shard over the shard's capacity share, the worse of the two),
``moved_fraction`` (rows placed away from ``current_shard``), and what a
one-shard change of the cluster does: ``moved_on_add`` / ``moved_on_remove``
(share of rows that move) and their ratios to the ideal (the new shard's
capacity share; the removed shard's rows), plus the distributed rate right
after the shard is added. Rows of replicated (read-only) tables are left out
of every count (see ``_trace``).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ._trace import PlacementError, Shards, Trace, read_only_tables, txn_shard_counts


def placement_quality(trace: Trace, position: np.ndarray, size: np.ndarray, fleet: Shards) -> dict:
    counts = txn_shard_counts(trace, position, len(fleet))
    accesses = np.bincount(position[trace.access_row], minlength=len(fleet)).astype(np.float64)
    partitioned = trace.partitioned
    stored = np.bincount(position[partitioned], weights=size[partitioned], minlength=len(fleet))

    def peak(load: np.ndarray) -> float:
        total = load.sum()
        return float((load / total / fleet.share).max()) if total > 0 else 1.0

    by_accesses, by_bytes = peak(accesses), peak(stored)
    return {
        "distributed_txn_rate": float((counts > 1).mean()) if trace.n_txns else 0.0,
        "shards_per_txn": float(np.maximum(counts, 1).mean()) if trace.n_txns else 0.0,
        "peak_to_mean_load": max(by_accesses, by_bytes),
        "peak_to_mean_accesses": by_accesses,
        "peak_to_mean_bytes": by_bytes,
    }


def _positions(fleet: Shards, placed, who: str) -> np.ndarray:
    position = fleet.index_of(np.asarray(placed, dtype=np.int64))
    if (position < 0).any():
        raise PlacementError(f"{who}: placed a row on shard {np.asarray(placed)[position < 0][0]}, which is not in shards")
    return position


def evaluate_placers(placers: dict, tables: dict, training: dict | None = None, disruption_trials: int = 3,
                     replicate_read_only: bool = True, reshard_budget: float = 0.1) -> dict[str, dict]:
    """Every metric for every placer, on the same tables. A placer with ``available`` False is scored
    with no value (``{"skipped": why}``)."""
    items, accesses, shards = tables["items"], tables["accesses"], tables["shards"]
    fleet = Shards.from_frame(shards)
    replicated = read_only_tables(items, accesses, (training or {}).get("accesses")) if replicate_read_only else frozenset()
    trace = Trace.build(items, accesses, replicated)
    size = items["size_bytes"].to_numpy(dtype=np.float64)
    current = fleet.index_of(items["current_shard"])
    has_current = (current >= 0) & trace.partitioned
    rng = np.random.default_rng(0)
    removals = rng.permutation(len(fleet))[:disruption_trials] if len(fleet) > 1 else []
    results = {}
    for name, placer in placers.items():
        if not getattr(placer, "available", True):
            results[name] = {"skipped": getattr(placer, "unavailable_reason", "not applicable to this snapshot")}
            continue
        started = time.perf_counter()
        placed = placer.place(items, shards)
        elapsed = time.perf_counter() - started
        position = _positions(fleet, placed, name)
        metrics = placement_quality(trace, position, size, fleet)
        moved = has_current & (position != current)
        metrics["moved_fraction"] = float(moved.sum() / max(has_current.sum(), 1))
        metrics["moved_bytes_fraction"] = float(size[moved].sum() / max(size[has_current].sum(), 1e-12))
        metrics["placements_per_s"] = len(items) / max(elapsed, 1e-9)
        metrics.update(_disruption(placer, items, shards, fleet, placed, trace, size, disruption_trials, removals, name))
        if hasattr(placer, "reshard") and reshard_budget is not None:
            resharded = _positions(fleet, placer.reshard(items, shards, reshard_budget), name)
            after = placement_quality(trace, resharded, size, fleet)
            moved = has_current & (resharded != current)
            metrics["reshard_budget"] = float(reshard_budget)
            metrics["resharded_distributed_txn_rate"] = after["distributed_txn_rate"]
            metrics["resharded_peak_to_mean_load"] = after["peak_to_mean_load"]
            metrics["resharded_moved_bytes_fraction"] = float(size[moved].sum() / max(size.sum(), 1e-12))
        results[name] = metrics
    return results


def _disruption(placer, items, shards, fleet, placed, trace, size, trials, removals, name) -> dict:
    """Rows moved by adding a shard (ideal: its capacity share) and by removing one (ideal: its rows only)."""
    if trials <= 0:
        return {}
    partitioned = trace.partitioned
    n = max(int(partitioned.sum()), 1)
    add_moved, add_ratio, add_rate, remove_moved, remove_ratio = [], [], [], [], []
    for t in range(trials):
        new_id = int(fleet.shard_id.max()) + 1 + t
        grown = pd.concat([shards, pd.DataFrame({"shard_id": pd.array([new_id], dtype=shards["shard_id"].dtype),
                                                 "capacity": [float(fleet.capacity.mean())]})], ignore_index=True)
        grown_fleet = Shards.from_frame(grown)
        after = np.asarray(placer.place(items, grown), dtype=np.int64)
        moved = float(((after != placed) & partitioned).sum() / n)
        ideal = float(grown_fleet.share[-1])
        add_moved.append(moved)
        add_ratio.append(moved / ideal)
        add_rate.append(placement_quality(trace, _positions(grown_fleet, after, name), size, grown_fleet)["distributed_txn_rate"])
    for victim in removals:
        victim_id = fleet.shard_id[victim]
        after = np.asarray(placer.place(items, shards[shards["shard_id"].astype(np.int64) != victim_id]), dtype=np.int64)
        moved = (after != placed) & partitioned
        held = (placed == victim_id) & partitioned
        remove_moved.append(float(moved.sum() / n))
        remove_ratio.append(float(moved.sum() / max(held.sum(), 1)))
    out = {"moved_on_add": float(np.mean(add_moved)), "disruption_ratio_add": float(np.mean(add_ratio)),
           "distributed_txn_rate_after_add": float(np.mean(add_rate))}
    if remove_moved:
        out.update({"moved_on_remove": float(np.mean(remove_moved)), "disruption_ratio_remove": float(np.mean(remove_ratio))})
    return out
