"""The metrics of TELEMETRY.md's compiler section, per task and over tasks.

A schedule that failed (no runtime) is never a good pick: as a top-k pick it
scores 0, and in the tuning curve a failed trial finds nothing (the runtime
so far stays at the time limit, or the task's slowest measured runtime).
"""

from __future__ import annotations

import numpy as np

CURVE = (1, 5, 10, 20)


def top_k_score(measured: np.ndarray, order: np.ndarray, k: int) -> float:
    """Best measured runtime / best measured runtime among the first k of ``order`` (0 if they all failed)."""
    best = np.nanmin(measured)
    picked = measured[order[:k]]
    return float(best / np.nanmin(picked)) if np.isfinite(picked).any() else 0.0


def tuning_curve(measured: np.ndarray, order: np.ndarray, ceiling: float, points=CURVE) -> dict[int, float]:
    """n -> best runtime found after measuring the first n of ``order``, over the task's best."""
    best = np.nanmin(measured)
    found = np.minimum.accumulate(np.where(np.isfinite(measured[order]), measured[order], ceiling))
    return {n: float(found[min(n, len(found)) - 1] / best) for n in points}


def kendall_tau(measured: np.ndarray, predicted: np.ndarray) -> float:
    from scipy.stats import kendalltau

    ok = np.isfinite(measured)
    if ok.sum() < 2:
        return float("nan")
    return float(kendalltau(predicted[ok], measured[ok]).statistic)


def task_metrics(measured: np.ndarray, predicted: np.ndarray, ceiling: float) -> dict:
    """All metrics of one task for a model that predicts runtimes (lower = faster)."""
    order = np.argsort(predicted, kind="stable")
    ok = np.isfinite(measured)
    return {
        "top1_score": top_k_score(measured, order, 1),
        "top5_score": top_k_score(measured, order, 5),
        "kendall_tau": kendall_tau(measured, predicted),
        "ape": np.abs(predicted[ok] - measured[ok]) / measured[ok],
        "curve": tuning_curve(measured, order, ceiling),
    }


def random_search(measured: np.ndarray, ceiling: float, draws: int = 200, seed: int = 0) -> dict:
    """The same metrics for measuring schedules in random order (expected values over ``draws`` orders)."""
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(measured)) for _ in range(draws)]
    curves = [tuning_curve(measured, order, ceiling) for order in orders]
    return {
        "top1_score": float(np.mean([top_k_score(measured, order, 1) for order in orders])),
        "top5_score": float(np.mean([top_k_score(measured, order, 5) for order in orders])),
        "kendall_tau": 0.0,  # a random order has no rank correlation, in expectation
        "curve": {n: float(np.mean([c[n] for c in curves])) for n in CURVE},
    }


def aggregate(per_task: list[dict]) -> dict:
    """Means over tasks (MAPE over all measured schedules), under the contract's keys."""
    out = {
        "top1_score": float(np.mean([t["top1_score"] for t in per_task])),
        "top5_score": float(np.mean([t["top5_score"] for t in per_task])),
        "kendall_tau": float(np.nanmean([t["kendall_tau"] for t in per_task])),
        "tuning_curve": {str(n): float(np.mean([t["curve"][n] for t in per_task])) for n in CURVE},
    }
    apes = [t["ape"] for t in per_task if "ape" in t]
    if apes:
        out["mape"] = float(np.mean(np.concatenate(apes)))
    for n in CURVE:  # flat copies: MLflow metrics and the promotion policy read scalars
        out[f"tuning_curve_{n}"] = out["tuning_curve"][str(n)]
    return out
