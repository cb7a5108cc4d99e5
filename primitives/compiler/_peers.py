"""The classical peers, scored beside the learned model on the same held-out tasks.

- ``xgboost``: gradient-boosted trees on the same features and target, the
  default cost model of Ansor and TenSet.
- ``roofline``: the analytic model a hand-written cost model starts from:
  runtime = max(flops / compute peak, traffic / bandwidth). The compute peak
  scales with vector width and threads where the schedule uses them; the
  traffic is the tiled working set reloaded per tile (feature
  ``log_traffic``). Its two peaks are fitted per family on the training
  measurements, so it is the best roofline these features allow.
- ``random``: measure schedules in random order (what a tuner without a
  model does); scored in ``_metrics.random_search``.
"""

from __future__ import annotations

import numpy as np

from ._features import FEATURE_NAMES
from ._space import FAMILIES

VECTOR_LANES = 8  # fp32 lanes of a 256-bit vector, the width GCC targets by default


class XGBoostPeer:
    def __init__(self, seed: int = 0, **params):
        self.params = {"n_estimators": 400, "max_depth": 6, "learning_rate": 0.05, "subsample": 0.8,
                       "colsample_bytree": 0.8, "min_child_weight": 1.0, **params}
        self.seed = seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> "XGBoostPeer":
        import xgboost

        self.model = xgboost.XGBRegressor(objective="reg:squarederror", random_state=self.seed, n_jobs=1, **self.params)
        self.model.fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted log(seconds per flop)."""
        return self.model.predict(x).astype(np.float64)


def _column(x: np.ndarray, name: str) -> np.ndarray:
    return x[:, FEATURE_NAMES.index(name)].astype(np.float64)


class RooflinePeer:
    """log t/flop = log max(1 / (peak * speedup), traffic_per_flop / bandwidth), peaks fitted per family."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> "RooflinePeer":
        self.peaks = {}
        for family in FAMILIES:
            rows = _column(x, f"family_{family}") > 0
            if rows.sum() < 2:
                continue
            self.peaks[family] = self._fit_one(x[rows], y[rows])
        self.fallback = self._fit_one(x, y)
        return self

    @staticmethod
    def _terms(x):
        speedup = np.where(_column(x, "vectorize") > 0, VECTOR_LANES, 1.0) * _column(x, "threads")
        return -np.log(speedup), _column(x, "log_traffic_per_flop") * np.log(2.0)

    def _fit_one(self, x, y):
        compute, memory = self._terms(x)
        # Two constants (log peak, log bandwidth): a coarse grid then a fine one, on squared log error.
        best = (np.inf, 0.0, 0.0)
        centre_c, centre_m, span = float(np.median(y - compute)), float(np.median(y - memory)), 8.0
        for _ in range(3):
            for c in np.linspace(centre_c - span, centre_c + span, 41):
                for m in np.linspace(centre_m - span, centre_m + span, 41):
                    error = float(np.mean((np.maximum(compute + c, memory + m) - y) ** 2))
                    if error < best[0]:
                        best = (error, c, m)
            centre_c, centre_m, span = best[1], best[2], span / 8
        return best[1], best[2]

    def predict(self, x: np.ndarray) -> np.ndarray:
        compute, memory = self._terms(x)
        out = np.empty(len(x))
        assigned = np.zeros(len(x), dtype=bool)
        for family, (c, m) in self.peaks.items():
            rows = _column(x, f"family_{family}") > 0
            out[rows] = np.maximum(compute[rows] + c, memory[rows] + m)
            assigned |= rows
        c, m = self.fallback
        out[~assigned] = np.maximum(compute[~assigned] + c, memory[~assigned] + m)
        return out
