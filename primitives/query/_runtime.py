"""The query optimizer's runtime: plan every arm, predict each plan's latency, pick an arm.

numpy only (no torch, Lightning or Prefect on this path). The ensemble's
members vote through their disagreement: an arm other than the native plan
is chosen only when the members agree it is faster by a clear margin, so an
unsure model falls back to arm 0, the engine's own choice.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .._base import Runtime, load_weights, save_weights
from ._engines import Arm, QueryError, engine_of
from ._plans import pack, parse_plans

WEIGHTS = "value_model.npz"
META = "query_runtime.json"


def _leaky_relu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, 0.01 * x)


def decide(log_predictions: np.ndarray, arms: list[int], z: float, min_gain: float) -> int:
    """Leave the native plan (arm 0) only for an arm every member expects to be clearly faster.

    The gain is the per-member log ratio native / best; it must exceed ``min_gain`` on
    average and stay positive ``z`` standard deviations (of the members' spread) below that.
    """
    native = arms.index(0)
    best = int(np.argmin(log_predictions.mean(axis=0)))
    if best == native:
        return 0
    gain = log_predictions[:, native] - log_predictions[:, best]
    if gain.mean() > min_gain and gain.mean() - z * gain.std() > 0:
        return arms[best]
    return 0


class QueryRuntime(Runtime):
    def __init__(self, weights: dict[str, np.ndarray], meta: dict):
        self.weights = weights
        self.meta = meta
        self.n_conv = sum(1 for k in weights if k.startswith("conv") and k.endswith("_w"))
        self.last_overhead_ms = 0.0

    # --- persistence ------------------------------------------------------
    def save(self, directory: Path) -> None:
        save_weights(directory, self.weights, self.meta, WEIGHTS, META)

    @classmethod
    def load(cls, directory: Path) -> "QueryRuntime":
        return cls(*load_weights(directory, WEIGHTS, META))

    # --- the value model ----------------------------------------------------
    def predict_log(self, plans, native_index: int | None = None) -> np.ndarray:
        """Per-member predicted log latency (ms) of each plan: members x plans.

        ``plans`` are one query's plans and ``plans[native_index]`` its native plan (arm 0), which all are compared with.
        """
        packed = pack(parse_plans(plans, native_index))
        feats, left, right, starts = packed["features"], packed["left"], packed["right"], packed["starts"]
        keep = np.ones((len(feats), 1), np.float32)
        keep[0] = 0.0
        h = np.broadcast_to(feats, (self.weights["conv0_w"].shape[0],) + feats.shape)
        for i in range(self.n_conv):
            w, b = self.weights[f"conv{i}_w"], self.weights[f"conv{i}_b"]
            h = (np.einsum("mnc,mcd->mnd", h, w[:, 0]) + np.einsum("mnc,mcd->mnd", h[:, left], w[:, 1])
                 + np.einsum("mnc,mcd->mnd", h[:, right], w[:, 2]) + b[:, None, :])
            h = _leaky_relu(h) * keep
        pooled = np.maximum.reduceat(h[:, 1:], starts - 1, axis=1)
        z = _leaky_relu(np.einsum("mbc,mcd->mbd", pooled, self.weights["head_w1"]) + self.weights["head_b1"][:, None, :])
        out = (np.einsum("mbc,mcd->mbd", z, self.weights["head_w2"]) + self.weights["head_b2"][:, None, :])[..., 0]
        return out * self.meta["target_std"] + self.meta["target_mean"]

    def predict(self, plans, native_index: int | None = None) -> np.ndarray:
        """Predicted latency (ms) of each plan: the ensemble's geometric mean."""
        return np.exp(self.predict_log(plans, native_index).mean(axis=0))

    def decide(self, log_predictions: np.ndarray, arms: list[int]) -> int:
        """The arm to run, from members x arms predictions (column of arm 0 must be present)."""
        return decide(log_predictions, arms, float(self.meta.get("uncertainty_z", 1.0)), float(self.meta.get("min_gain", 0.1)))

    def sample_arm(self, log_predictions: np.ndarray, arms: list[int], rng: np.random.Generator) -> int:
        """Thompson sampling: the best arm of one member drawn at random (exploration)."""
        member = int(rng.integers(log_predictions.shape[0]))
        return arms[int(np.argmin(log_predictions[member]))]

    # --- the hot path ------------------------------------------------------------
    def arms_for(self, engine_name: str) -> list[Arm]:
        stored = self.meta.get("arms", {}).get(engine_name) or self.meta.get("arms", {}).get("*")
        if stored:
            return [Arm(a["arm"], a["name"], tuple(a["settings"])) for a in stored]
        from ._engines import engine_named

        return engine_named(engine_name).default_arms()

    def plan_arms(self, sql: str, connection, engine=None) -> tuple[list[int], list[str]]:
        """Plans of every arm the engine accepts; arm 0 must plan (else the query itself is bad)."""
        engine = engine or engine_of(connection)
        arms, plans = [], []
        for arm in self.arms_for(engine.name):
            try:
                plans.append(engine.plan(connection, sql, arm))
                arms.append(arm.arm)
            except QueryError:
                if arm.arm == 0:
                    raise
        return arms, plans

    def choose(self, sql: str, connection) -> int:
        """The arm to run ``sql`` under on ``connection`` (DuckDB or psycopg); 0 when unsure.

        ``last_overhead_ms`` holds the time spent planning every arm and scoring the plans.
        """
        started = time.perf_counter()
        arms, plans = self.plan_arms(sql, connection)
        arm = self.decide(self.predict_log(plans, arms.index(0)), arms)
        self.last_overhead_ms = (time.perf_counter() - started) * 1000.0
        return arm

    def predict_frame(self, frame, context: dict):
        """MLflow pyfunc: a frame with a ``plan`` column (and optionally ``native_plan``) -> predicted latency (ms)."""
        import pandas as pd

        if "native_plan" not in frame:
            return pd.Series(self.predict(list(frame["plan"])), name="predicted_latency_ms")
        predicted = [self.predict([native, plan], native_index=0)[1] for plan, native in zip(frame["plan"], frame["native_plan"])]
        return pd.Series(predicted, name="predicted_latency_ms")
