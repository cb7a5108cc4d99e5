"""The query optimizer's runtime: template, probes, predicted ratios, an arm.

numpy only (no torch, Lightning or Prefect on this path), and no plan of any
arm: a query is fingerprinted (a regular expression), its selectivity probes
run (cached per constant tuple), and one batched forward pass of the
ensemble predicts every arm's latency relative to native. A template the
model was not trained on stays on the native plan (arm 0) until its own
history exists; on a known template an arm other than native is chosen only
when the members agree it is faster by a clear margin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._base import Runtime, load_weights, save_weights
from ._engines import Arm, engine_of
from ._templates import Prober, probe_features

WEIGHTS = "value_model.npz"
META = "query_runtime.json"


def decide(log_ratios: np.ndarray, arms: list[int], z: float, min_gain: float) -> int:
    """Leave the native plan (arm 0) only for an arm every member expects to be clearly faster.

    ``log_ratios`` is members x arms (log latency, or log latency relative to native). The gain is
    the per-member log ratio native / best; it must exceed ``min_gain`` on average and stay positive
    ``z`` standard deviations (of the members' spread) below that.
    """
    native = arms.index(0)
    best = int(np.argmin(log_ratios.mean(axis=0)))
    if best == native:
        return 0
    gain = log_ratios[:, native] - log_ratios[:, best]
    if gain.mean() > min_gain and gain.mean() - z * gain.std() > 0:
        return arms[best]
    return 0


@dataclass
class Choice:
    arm: int
    reason: str                        # "unseen template", "model", ...
    template: str
    log_ratios: np.ndarray | None      # members x arms, None for an unseen template
    overhead_ms: float


class QueryRuntime(Runtime):
    def __init__(self, weights: dict[str, np.ndarray], meta: dict):
        self.weights = weights
        self.meta = meta
        self.n_layers = sum(1 for k in weights if k.startswith("layer") and k.endswith("_w"))
        self.templates: dict[str, int] = meta.get("templates", {})
        self.history: dict[str, int] = meta.get("history", {})
        self.probers: dict[str, Prober] = {}
        self.last_overhead_ms = 0.0

    # --- persistence ------------------------------------------------------
    def save(self, directory: Path) -> None:
        save_weights(directory, self.weights, self.meta, WEIGHTS, META)

    @classmethod
    def load(cls, directory: Path) -> "QueryRuntime":
        return cls(*load_weights(directory, WEIGHTS, META))

    # --- the value model ----------------------------------------------------
    @property
    def arm_ids(self) -> list[int]:
        return [int(a) for a in self.meta.get("arm_ids", [0])]

    def known(self, template: str) -> bool:
        return template in self.templates and self.history.get(template, 0) >= int(self.meta.get("min_history", 2))

    def predict_raw(self, template_index: np.ndarray, features: np.ndarray) -> np.ndarray:
        """members x queries x arms: the network's output (column 0 the standardised native log ms, then log ratios)."""
        h = np.concatenate([self.weights["embedding"][:, template_index],
                            np.broadcast_to(features, (self.weights["embedding"].shape[0],) + features.shape)], axis=-1)
        for i in range(self.n_layers):
            h = np.einsum("mbi,mio->mbo", h, self.weights[f"layer{i}_w"]) + self.weights[f"layer{i}_b"][:, None, :]
            if i < self.n_layers - 1:
                h = h / (1.0 + np.exp(-h))
        return h

    def predict(self, template_index: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(members x queries x arms log ratios to native, arm 0 at 0; members x queries native log ms)."""
        out = self.predict_raw(template_index, features)
        ratios = out.copy()
        ratios[..., 0] = 0.0
        return ratios, out[..., 0] * float(self.meta.get("native_std", 1.0)) + float(self.meta.get("native_mean", 0.0))

    def predictions_of(self, template: str, counts: list[tuple[int, int]]) -> tuple[np.ndarray, float]:
        """(members x arms log ratios, expected native ms) for one query of a known template."""
        features = probe_features(counts, self.meta.get("usual", {}).get(template))
        ratios, native_log = self.predict(np.array([self.templates[template]]), features[None])
        return ratios[:, 0], float(np.exp(native_log[:, 0].mean()))

    def decide(self, log_ratios: np.ndarray, arms: list[int], native_ms: float | None = None) -> int:
        """The arm to run, from members x arms predictions (column of arm 0 must be present); a query expected
        to run natively in less than the calibrated ``min_native_ms`` stays native."""
        if native_ms is not None and native_ms < float(self.meta.get("min_native_ms", 0.0)):
            return 0
        return decide(log_ratios, arms, float(self.meta.get("uncertainty_z", 1.0)), float(self.meta.get("min_gain", 0.1)))

    def sample_arm(self, log_ratios: np.ndarray, arms: list[int], rng: np.random.Generator) -> int:
        """Thompson sampling: the best arm of one member drawn at random (exploration)."""
        member = int(rng.integers(log_ratios.shape[0]))
        return arms[int(np.argmin(log_ratios[member]))]

    # --- the hot path ------------------------------------------------------------
    def arms_for(self, engine_name: str) -> list[Arm]:
        stored = self.meta.get("arms", {}).get(engine_name) or self.meta.get("arms", {}).get("*")
        if stored:
            return [Arm(a["arm"], a["name"], tuple(a["settings"])) for a in stored]
        from ._engines import engine_named

        return engine_named(engine_name).default_arms()

    def prober(self, engine_name: str) -> Prober:
        if engine_name not in self.probers:
            self.probers[engine_name] = Prober(engine_name)
        return self.probers[engine_name]

    def consider(self, sql: str, connection, engine=None, explore: bool = False) -> Choice:
        """The choice for ``sql`` on ``connection`` with what it rests on and what it cost.

        A template whose history never changed its decision is answered without probes;
        ``explore`` (the on-policy source) probes it anyway, for the ensemble's predictions.
        """
        started = time.perf_counter()
        engine = engine or engine_of(connection)
        prober = self.prober(engine.name)
        template, _, _ = prober.template(sql)
        if not self.known(template):
            return Choice(0, "unseen template", template, None, (time.perf_counter() - started) * 1000.0)
        settled = self.meta.get("settled", {}).get(template)
        if settled is not None and not explore:
            return Choice(int(settled), "settled template", template, None, (time.perf_counter() - started) * 1000.0)
        _, counts = prober.measure(sql, connection)
        log_ratios, native_ms = self.predictions_of(template, counts)
        arm = self.decide(log_ratios, self.arm_ids, native_ms)
        return Choice(arm, "model", template, log_ratios, (time.perf_counter() - started) * 1000.0)

    def choose(self, sql: str, connection) -> int:
        """The arm to run ``sql`` under on ``connection`` (DuckDB or psycopg); 0 when unsure.

        ``last_overhead_ms`` holds the time spent fingerprinting, probing and scoring.
        """
        choice = self.consider(sql, connection)
        self.last_overhead_ms = choice.overhead_ms
        return choice.arm

    def predict_frame(self, frame, context: dict):
        """MLflow pyfunc: a frame with ``sql`` and ``probes`` (JSON [[rows, table rows], ...]) -> the arm and
        the predicted latency ratio of every arm to native (NaN for a template it has not learned)."""
        import json

        import pandas as pd

        from ._templates import fingerprint

        rows = []
        for sql, probes in zip(frame["sql"], frame.get("probes", pd.Series([None] * len(frame)))):
            template = fingerprint(sql)
            out = {"arm": 0, **{f"ratio_arm_{a}": float("nan") for a in self.arm_ids}}
            if self.known(template):
                counts = [tuple(p) for p in json.loads(probes)] if isinstance(probes, str) and probes else []
                log_ratios, native_ms = self.predictions_of(template, counts)
                out["arm"] = self.decide(log_ratios, self.arm_ids, native_ms)
                out.update({f"ratio_arm_{a}": float(r) for a, r in zip(self.arm_ids, np.exp(log_ratios.mean(axis=0)))})
            rows.append(out)
        return pd.DataFrame(rows)
