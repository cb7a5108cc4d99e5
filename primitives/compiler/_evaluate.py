"""Offline evaluation on held-out tasks: the learned model, XGBoost, the roofline and random search.

Every model ranks all schedules measured for a task (failed ones included:
a model that picks a schedule that fails to compile or times out scores 0
for that pick). The peers that learn (XGBoost, the roofline's two peaks) fit
on ``config["training_tables"]`` when the pipeline hands them the training
part; a snapshot evaluated on its own has no training part, so they are
cross-fitted: each fold of tasks is predicted by peers fitted on the others.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from .._report import CHAMPION_CANDIDATE, LEARNED, Scores, paired_se_key
from ._features import featurize_rows, log_flops_rows
from ._metrics import CURVE, aggregate, random_search, task_metrics
from ._peers import RooflinePeer, XGBoostPeer

PEERS = {"xgboost": XGBoostPeer, "roofline": RooflinePeer}


def _measured_rows(tables) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tasks, measurements = tables["tasks"], tables["measurements"]
    ok = measurements["runtime_s"].notna().to_numpy()
    x = featurize_rows(tasks, measurements[ok])
    y = np.log(measurements.loc[ok, "runtime_s"].to_numpy(dtype=float)) - log_flops_rows(tasks, measurements[ok])
    return x, y, measurements.loc[ok, "task_id"].to_numpy()


def fit_peers(training_tables, seed: int = 0) -> dict:
    x, y, _ = _measured_rows(training_tables)
    return {name: peer(seed=seed).fit(x, y) if name == "xgboost" else peer().fit(x, y) for name, peer in PEERS.items()}


def _cross_fitted(tables, x_all: np.ndarray, task_of_row: np.ndarray, folds: int, seed: int) -> dict[str, np.ndarray]:
    tasks = np.asarray(sorted(set(task_of_row)))
    fold_of = dict(zip(np.random.default_rng(seed).permutation(tasks), np.arange(len(tasks)) % folds))
    out = {name: np.zeros(len(x_all)) for name in PEERS}
    for fold in range(min(folds, len(tasks))):
        held = np.asarray([fold_of[t] == fold for t in task_of_row])
        train_tasks = [t for t in tasks if fold_of[t] != fold]
        training = {"tasks": tables["tasks"][tables["tasks"]["task_id"].isin(train_tasks)],
                    "measurements": tables["measurements"][tables["measurements"]["task_id"].isin(train_tasks)]}
        for name, peer in fit_peers(training, seed).items():
            out[name][held] = peer.predict(x_all[held])
    return out


def score(candidates: dict, tables, config: dict) -> Scores:
    tasks, measurements = tables["tasks"], tables["measurements"].reset_index(drop=True)
    measured_any = measurements.groupby("task_id")["runtime_s"].apply(lambda r: r.notna().any())
    scored_tasks = [t for t in tasks["task_id"] if measured_any.get(t, False)]
    skipped = [t for t in tasks["task_id"] if t not in set(scored_tasks)]
    if not scored_tasks:
        raise ValueError("no held-out task has a measured schedule to evaluate on")
    measurements = measurements[measurements["task_id"].isin(scored_tasks)].reset_index(drop=True)
    x_all = featurize_rows(tasks, measurements)
    log_flops = log_flops_rows(tasks, measurements)
    task_of_row = measurements["task_id"].to_numpy()
    seed = int(config.get("seed", 0))

    predictions: dict[str, np.ndarray] = {name: runtime.score_features(x_all) for name, runtime in candidates.items()}
    peer_training = None
    if config.get("baselines", True):
        training = config.get("training_tables")
        if training is not None and training["measurements"]["runtime_s"].notna().sum() >= 2:
            for name, peer in fit_peers(training, seed).items():
                predictions[name] = peer.predict(x_all)
            peer_training = "training part"
        elif len(scored_tasks) >= 2:
            predictions.update(_cross_fitted(tables, x_all, task_of_row, int(config.get("peer_folds", 5)), seed))
            peer_training = "cross-fitted by task"

    first_candidate = next(iter(candidates), None)  # the per-task rows show the challenger's predictions
    per_model = {name: [] for name in list(predictions) + (["random"] if config.get("baselines", True) else [])}
    task_entries = []
    kernels = tasks.set_index("task_id")["kernel"]
    shapes = tasks.set_index("task_id")["shape"]
    for task_id in scored_tasks:
        rows = np.flatnonzero(task_of_row == task_id)
        part = measurements.iloc[rows]
        measured = part["runtime_s"].to_numpy(dtype=float, na_value=np.nan)
        limit = part["time_limit_s"].max() if "time_limit_s" in part else np.nan
        ceiling = float(limit) if np.isfinite(limit) else float(np.nanmax(measured))
        entry = {"task_id": task_id, "kernel": kernels[task_id], "shape": json.loads(shapes[task_id]),
                 "schedules": int(len(rows)), "failed": int(np.isnan(measured).sum()), "best_s": float(np.nanmin(measured))}
        for name, log_per_flop in predictions.items():
            predicted = np.exp(log_per_flop[rows] + log_flops[rows])
            metrics = task_metrics(measured, predicted, ceiling)
            per_model[name].append(metrics)
            entry[name] = {"top1_score": metrics["top1_score"], "kendall_tau": metrics["kendall_tau"],
                           "pick": part["schedule"].iloc[int(np.argmin(predicted))]}
            if name == first_candidate:
                entry["measured_s"] = [None if np.isnan(v) else float(v) for v in measured]
                entry["predicted_s"] = [float(v) for v in predicted]
        if "random" in per_model:
            per_model["random"].append(random_search(measured, ceiling, seed=seed))
        task_entries.append(entry)

    details = {"tasks": task_entries, "skipped_tasks": skipped, "tasks_evaluated": len(scored_tasks),
               "tuning_curve_points": list(CURVE)}
    if peer_training:
        details["peer_training"] = peer_training
    candidate_metrics = {name: {**aggregate(per_model[name]), "tasks_evaluated": len(scored_tasks)} for name in candidates}
    if LEARNED in candidates and CHAMPION_CANDIDATE in candidates and len(scored_tasks) > 1:
        # Scored on the same tasks: the standard error of the per-task difference, for the top-1 guardrail.
        difference = [a["top1_score"] - b["top1_score"] for a, b in zip(per_model[LEARNED], per_model[CHAMPION_CANDIDATE])]
        candidate_metrics[LEARNED][paired_se_key("top1_score")] = float(np.std(difference, ddof=1) / np.sqrt(len(difference)))
    return Scores(candidates=candidate_metrics,
                  peers={name: aggregate(per_model[name]) for name in per_model if name not in candidates},
                  details=details)


def figures(report: dict) -> dict:
    """Predicted vs measured runtime (learned model), and the tuning curves of every model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    points = [(t["kernel"], m, p) for t in report.get("tasks", []) if "measured_s" in t
              for m, p in zip(t["measured_s"], t["predicted_s"]) if m is not None]
    if points:
        frame = pd.DataFrame(points, columns=["kernel", "measured", "predicted"])
        fig, ax = plt.subplots(figsize=(5.5, 5))
        for kernel, part in frame.groupby("kernel"):
            ax.scatter(part["measured"] * 1e3, part["predicted"] * 1e3, s=8, alpha=0.6, label=kernel)
        lo, hi = frame[["measured", "predicted"]].min().min() * 1e3, frame[["measured", "predicted"]].max().max() * 1e3
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
        ax.set(xscale="log", yscale="log", xlabel="measured runtime (ms)", ylabel="predicted runtime (ms)",
               title=f"held-out tasks: MAPE {report['metrics'].get('mape', float('nan')):.1%}")
        ax.legend()
        fig.tight_layout()
        plt.close(fig)
        out["plots/predicted_vs_measured.png"] = fig
    curves = {"learned": report.get("metrics", {})} | report.get("baselines", {})
    curves = {k: v["tuning_curve"] for k, v in curves.items() if "tuning_curve" in v}
    if curves:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for name, curve in curves.items():
            ax.plot([int(n) for n in curve], list(curve.values()), marker="o", label=name)
        ax.set(xscale="log", xlabel="schedules measured (model's order)", ylabel="best found / task best",
               title="tuning curve on held-out tasks")
        ax.legend()
        fig.tight_layout()
        plt.close(fig)
        out["plots/tuning_curve.png"] = fig
    return out
