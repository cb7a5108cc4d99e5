"""Gradient-boosted trees as plain arrays: fitted with XGBoost, evaluated with numpy.

The cost model's runtime must load without unpickling and keep its hot path
free of heavy imports, so a fitted booster is flattened into a few arrays
(``forest_*``, stored beside the MLP members' weights in the runtime's npz)
and ``forest_predict`` walks every tree for every row at once: one numpy
step per level of depth, never a Python iteration per row or per tree.
"""

from __future__ import annotations

import json

import numpy as np

KEYS = ("forest_feature", "forest_threshold", "forest_left", "forest_right", "forest_value", "forest_roots", "forest_base",
        "forest_depth")


def fit_forest(x: np.ndarray, y: np.ndarray, seed: int = 0, **params) -> dict[str, np.ndarray]:
    """Fit XGBoost as the ``xgboost`` peer fits it (its settings, overridden by ``params``) on ``x`` -> ``y`` and
    return its trees as ``forest_*`` arrays."""
    from ._peers import XGBoostPeer

    if not np.isfinite(x).all():
        raise ValueError("fit_forest: features must be finite (the flattened trees keep no missing-value branch)")
    return flatten(XGBoostPeer(seed=seed, **params).fit(x, y).model.get_booster())


def flatten(booster) -> dict[str, np.ndarray]:
    """A fitted XGBoost booster (one output, numeric splits) as ``forest_*`` arrays.

    A node goes to its left child when ``x[feature] < threshold`` (XGBoost's rule, in float32). Leaves point
    to themselves, so every row can take the same number of steps, the deepest tree's depth.
    """
    model = json.loads(booster.save_raw("json"))
    learner = model["learner"]
    base = float(str(learner["learner_model_param"]["base_score"]).strip("[]").split(",")[0])
    features, thresholds, lefts, rights, values, roots = [], [], [], [], [], []
    offset, depth = 0, 0
    for tree in learner["gradient_booster"]["model"]["trees"]:
        left = np.asarray(tree["left_children"], dtype=np.int64)
        right = np.asarray(tree["right_children"], dtype=np.int64)
        condition = np.asarray(tree["split_conditions"], dtype=np.float32)
        leaf = left < 0
        own = np.arange(len(left))
        features.append(np.where(leaf, 0, np.asarray(tree["split_indices"], dtype=np.int64)))
        thresholds.append(np.where(leaf, 0.0, condition).astype(np.float32))
        values.append(np.where(leaf, condition, 0.0).astype(np.float32))  # a leaf's value is stored as its condition
        lefts.append(np.where(leaf, own, left) + offset)
        rights.append(np.where(leaf, own, right) + offset)
        roots.append(offset)
        depth = max(depth, _depth(left, right))
        offset += len(left)
    return {"forest_feature": np.concatenate(features).astype(np.int32),
            "forest_threshold": np.concatenate(thresholds),
            "forest_left": np.concatenate(lefts).astype(np.int32),
            "forest_right": np.concatenate(rights).astype(np.int32),
            "forest_value": np.concatenate(values),
            "forest_roots": np.asarray(roots, dtype=np.int32),
            "forest_base": np.asarray(base, dtype=np.float64),
            "forest_depth": np.asarray(depth, dtype=np.int32)}


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    level, frontier = 0, np.asarray([0])
    while True:
        children = np.concatenate([left[frontier], right[frontier]])
        children = children[children >= 0]
        if not len(children):
            return level
        level, frontier = level + 1, children


def forest_predict(forest: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The flattened booster's prediction for each row of ``x`` (XGBoost's ``predict``, to float32 rounding)."""
    x = np.asarray(x, dtype=np.float32)
    rows = np.arange(len(x))[None, :]
    node = np.repeat(forest["forest_roots"][:, None], len(x), axis=1)  # trees x rows
    feature, threshold = forest["forest_feature"], forest["forest_threshold"]
    left, right = forest["forest_left"], forest["forest_right"]
    for _ in range(int(forest["forest_depth"])):
        goes_left = x[rows, feature[node]] < threshold[node]
        node = np.where(goes_left, left[node], right[node])
    return float(forest["forest_base"]) + forest["forest_value"][node].astype(np.float64).sum(axis=0)
