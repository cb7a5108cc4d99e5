"""Cache admission as a learned primitive: admit an object only if it will be read again.

Replaces the classical "admit everything" and "admit only small objects"
rules with a logistic model over the object's size and recent popularity.
It is written only against aiprim's public contract (``aiprim.primitives``),
as a third party would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aiprim.primitives import (
    Column, Guardrail, HoldOut, Newest, Peer, Primitive, Runtime, Schema, Scores, Table, TrainParams,
    load_weights, save_weights,
)

FEATURES = ("log_size", "popularity")
SCHEMA = Schema(version=1, tables=(
    Table("requests", columns=(
        Column("request_id", "int64", unique=True),
        Column("ts", "float64", min=0.0),
        Column("log_size", "float64", drift="mean"),
        Column("popularity", "float64", min=0.0, max=1.0, drift="mean"),
        Column("reused", "bool"),
    ), min_rows=100),
))


class AdmissionRuntime(Runtime):
    def __init__(self, weights: np.ndarray, bias: float, mean: np.ndarray, std: np.ndarray):
        self.weights, self.bias, self.mean, self.std = weights, float(bias), mean, std

    def admit(self, requests) -> np.ndarray:
        x = (requests[list(FEATURES)].to_numpy(np.float64) - self.mean) / self.std
        return x @ self.weights + self.bias > 0.0

    def predict_frame(self, frame, context):
        import pandas as pd

        return pd.Series(self.admit(frame), name="admit")

    def save(self, directory: Path) -> None:
        save_weights(directory, {"weights": self.weights, "mean": self.mean, "std": self.std}, {"bias": self.bias},
                     "admission.npz", "admission.json")

    @classmethod
    def load(cls, directory: Path) -> "AdmissionRuntime":
        arrays, meta = load_weights(directory, "admission.npz", "admission.json")
        return cls(arrays["weights"], meta["bias"], arrays["mean"], arrays["std"])


class AdmitAll:
    def admit(self, requests):
        return np.ones(len(requests), dtype=bool)


class AdmitSmall:
    """Admit objects smaller than the median size: the classical size-aware rule."""

    def admit(self, requests):
        return requests["log_size"].to_numpy() < np.median(requests["log_size"].to_numpy())


@dataclass(frozen=True)
class AdmissionParams(TrainParams):
    lr: float = 0.05
    batch_size: int = 256


def error_rate(admitted: np.ndarray, reused: np.ndarray) -> float:
    return float(np.mean(admitted != reused))


class Admission(Primitive):
    name = "admission"
    schema = SCHEMA
    primary_metric = "error_rate"
    higher_is_better = False
    runtime_class = AdmissionRuntime
    params_class = AdmissionParams
    holdout = HoldOut("requests", rules=(Newest("ts"),), order_by="ts")
    peers = (Peer("admit_all", "admit every object"), Peer("admit_small", "admit objects below the median size"))

    def generate(self, config, seed):
        import pandas as pd

        rng = np.random.default_rng(seed)
        n = int(config.get("requests", 4000))
        log_size = rng.normal(8.0, 2.0, n)
        popularity = rng.beta(2.0, 3.0, n)
        reused = rng.random(n) < 1.0 / (1.0 + np.exp(-(6.0 * popularity - 0.6 * (log_size - 8.0) - 2.0)))
        frame = pd.DataFrame({"request_id": np.arange(n, dtype=np.int64), "ts": np.sort(rng.random(n)) * 3600.0,
                              "log_size": log_size, "popularity": popularity, "reused": reused})
        return {"requests": frame}, {}

    def build_datamodule(self, tables, params, seed):
        from ._model import AdmissionData

        return AdmissionData(tables["requests"], FEATURES, params.batch_size, seed)

    def build_module(self, datamodule, params):
        from ._model import AdmissionModule

        return AdmissionModule(len(FEATURES), params.lr)

    def export_runtime(self, module, datamodule, directory):
        linear = module.linear
        AdmissionRuntime(linear.weight.detach().numpy()[0].astype(np.float64), float(linear.bias.detach()[0]),
                         datamodule.mean, datamodule.std).save(Path(directory))

    def score(self, candidates, tables, config):
        requests = tables["requests"]
        reused = requests["reused"].to_numpy(bool)
        peers = {"admit_all": AdmitAll(), "admit_small": AdmitSmall()} if config["baselines"] else {}
        scored = {name: {"error_rate": error_rate(policy.admit(requests), reused)}
                  for name, policy in {**candidates, **peers}.items()}
        return Scores(candidates={n: scored[n] for n in candidates}, peers={n: scored[n] for n in peers})

    def guardrails(self, config):
        return (Guardrail("error_rate", max=0.5),)

    def input_example(self, tables):
        return tables["requests"][list(FEATURES)].head(5)
