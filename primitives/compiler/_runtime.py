"""The cost model's runtime: numpy only, for compilers and tuners on their hot path.

``predict(task, schedules)`` gives predicted runtimes in seconds and
``rank(task, schedules)`` the schedules' order, fastest first. A task is
``{"kernel": "matmul", "shape": {"M": 512, "N": 512, "K": 512}}``; schedules
are a list of knob dicts or a DataFrame with one column per knob. Knobs are
checked column-wise: an unknown knob or a value outside the family's space
is a ``TaskError`` naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._base import Runtime, load_weights, mlp_forward, save_weights
from ._features import featurize_task, log_flops
from ._forest import KEYS as FOREST_KEYS, forest_predict
from ._machine import machine_caches
from ._space import FAMILIES, TaskError, parse_shape, plural, task_label

WEIGHTS, META = "cost_model.npz", "cost_model.json"


def task_parts(task) -> tuple[str, dict, str]:
    """(kernel, shape, name) of a task given as a dict, a (kernel, shape) pair or a row with kernel/shape."""
    if isinstance(task, dict):
        kernel, shape, name = task.get("kernel"), task.get("shape"), task.get("task_id")
    elif isinstance(task, (tuple, list)) and len(task) == 2:
        (kernel, shape), name = task, None
    else:
        kernel, shape, name = getattr(task, "kernel", None), getattr(task, "shape", None), getattr(task, "task_id", None)
    if isinstance(task, str):
        raise TaskError(f"task {task!r}: give a dict {{'kernel': ..., 'shape': {{...}}}} or a (kernel, shape) pair")
    if not isinstance(kernel, str):
        raise TaskError(f"{task_label(name)}: needs a kernel family name")
    return kernel, parse_shape(kernel, shape, name), name


def knob_frame(kernel: str, schedules, name: str | None = None):
    """Schedules as a DataFrame of the family's knobs, checked column by column."""
    import pandas as pd

    frame = schedules if isinstance(schedules, pd.DataFrame) else pd.DataFrame(list(schedules))
    knobs = FAMILIES[kernel].knobs
    unknown = sorted(set(frame.columns) - set(knobs))
    if unknown:
        raise TaskError(f"{task_label(name)}: unknown {plural('knob', unknown)} for {kernel} (knobs: {', '.join(knobs)})")
    missing = [k for k in knobs if k not in frame.columns]
    if missing:
        raise TaskError(f"{task_label(name)}: schedules miss {plural('knob', missing)}")
    for knob, allowed in knobs.items():
        bad = ~frame[knob].isin(allowed).to_numpy()
        if bad.any():
            value = frame[knob].iloc[int(bad.argmax())]
            raise TaskError(f"{task_label(name)}: knob {knob}={getattr(value, 'item', lambda: value)()!r} is not one of {list(allowed)}")
    return frame[list(knobs)]


class CompilerRuntime(Runtime):
    def __init__(self, weights: dict, meta: dict):
        self.weights = weights
        self.meta = meta
        self.forest = {k: weights[k] for k in FOREST_KEYS} if "forest_roots" in weights else None
        self.tree_weight = float(meta.get("tree_weight", 0.0)) if self.forest is not None else 0.0
        weights = {k: v for k, v in weights.items() if not k.startswith("forest_")}
        if "w0" in weights:  # a single-MLP runtime, as written before ensembles
            weights = {f"m0_{k}": v for k, v in weights.items()}
        members = sorted({int(k[1:].split("_")[0]) for k in weights})
        self.members = [[(weights[f"m{j}_w{i}"], weights[f"m{j}_b{i}"]) for i in range(sum(1 for k in weights if k.startswith(f"m{j}_w")))]
                        for j in members]
        self.feature_mean = np.asarray(meta["feature_mean"], dtype=np.float32)
        self.feature_std = np.asarray(meta["feature_std"], dtype=np.float32)
        # The feature columns each member reads (a runtime written before views: every member reads them all).
        everything = list(range(len(self.feature_mean)))
        self.columns = [np.asarray(c, dtype=np.int64) for c in meta.get("member_columns") or [everything] * len(self.members)]
        # The kernel families it was trained on; None for a runtime written before it recorded them.
        self.kernels = meta.get("kernels")

    def save(self, directory: Path) -> None:
        save_weights(directory, self.weights, self.meta, WEIGHTS, META)

    @classmethod
    def load(cls, directory: Path) -> "CompilerRuntime":
        return cls(*load_weights(directory, WEIGHTS, META))

    def member_scores(self, features: np.ndarray) -> np.ndarray:
        """Each member's prediction (members x rows, standardised log seconds per flop): the MLPs', then the
        trees' where the runtime has them."""
        x = (features - self.feature_mean) / self.feature_std
        scores = [mlp_forward(x[:, cols], *zip(*layers))[:, 0].astype(np.float64) for layers, cols in zip(self.members, self.columns)]
        if self.tree_weight > 0:  # 0 where the runtime has no tree member
            scores.append(forest_predict(self.forest, x))
        return np.stack(scores)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """Predicted log(seconds per flop) of featurised schedules: the MLP members' mean, blended with the
        tree member's prediction by ``tree_weight`` where the runtime has one."""
        scores = self.member_scores(features)
        n_mlp = len(self.members)
        h = scores[:n_mlp].mean(axis=0)
        if len(scores) > n_mlp:
            h = (1.0 - self.tree_weight) * h + self.tree_weight * scores[n_mlp]
        return h * self.meta["target_std"] + self.meta["target_mean"]

    def predict(self, task, schedules, caches: tuple[int, int] | None = None) -> np.ndarray:
        """Predicted runtime in seconds of each schedule on the machine it runs on: this one, unless ``caches``
        gives that machine's ``(l1_bytes, l2_bytes)`` (a snapshot records them for its CPU tasks)."""
        kernel, shape, name = task_parts(task)
        frame = knob_frame(kernel, schedules, name)
        if frame.empty:
            return np.zeros(0)
        x = featurize_task(kernel, shape, frame, caches if caches is not None else machine_caches(kernel))
        return np.exp(self.score_features(x) + log_flops(kernel, shape))

    def rank(self, task, schedules) -> np.ndarray:
        """Indices of the schedules, predicted fastest first."""
        return np.argsort(self.predict(task, schedules), kind="stable")

    def predict_frame(self, frame, context: dict):
        """pyfunc: rows with ``kernel``, ``shape`` and ``schedule`` (JSON) -> predicted ``runtime_s``."""
        import pandas as pd

        out = np.zeros(len(frame))
        for (kernel, shape), rows in frame.groupby(["kernel", "shape"], sort=False).groups.items():
            schedules = pd.DataFrame([json.loads(s) for s in frame.loc[rows, "schedule"]])
            out[frame.index.get_indexer(rows)] = self.predict({"kernel": kernel, "shape": shape}, schedules)
        return pd.DataFrame({"runtime_s": out})
