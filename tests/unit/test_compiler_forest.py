"""The cost model's tree member: XGBoost's trees flattened to arrays predict as XGBoost does, and the runtime blends them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xgboost

from aiprim.primitives.compiler._forest import fit_forest, flatten, forest_predict
from aiprim.primitives.compiler._model import CostDataModule, CostModule, export_weights, fit_tree_member
from aiprim.primitives.compiler._runtime import CompilerRuntime

from tests.unit.test_compiler_warm_start import _tables


def test_flattened_trees_predict_as_xgboost_does():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 12)).astype(np.float32)
    y = np.sin(3 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.1 * rng.normal(size=600)
    model = xgboost.XGBRegressor(n_estimators=60, max_depth=5, learning_rate=0.1, random_state=0, n_jobs=1).fit(x, y)
    unseen = rng.normal(size=(300, 12)).astype(np.float32) * 2  # beyond the training range too
    forest = flatten(model.get_booster())
    assert int(forest["forest_depth"]) == 5 and len(forest["forest_roots"]) == 60
    np.testing.assert_allclose(forest_predict(forest, unseen), model.predict(unseen), atol=1e-4)


def test_fit_forest_refuses_missing_values():
    x = np.ones((10, 3))
    x[0, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fit_forest(x, np.zeros(10))


def test_runtime_blends_the_tree_member_by_its_weight(tmp_path):
    data = CostDataModule(**_tables(0, n_tasks=6))
    torch.manual_seed(0)
    module = CostModule(data.feature_mean.tolist(), data.feature_std.tolist(), data.target_mean, data.target_std,
                        hidden=8, depth=2, members=2)
    weights = export_weights(module) | fit_tree_member(data, seed=0)
    meta = {"feature_mean": data.feature_mean.tolist(), "feature_std": data.feature_std.tolist(),
            "target_mean": data.target_mean, "target_std": data.target_std, "member_columns": [list(c) for c in module.net.columns]}
    CompilerRuntime(weights, {**meta, "tree_weight": 0.25}).save(tmp_path)
    blended = CompilerRuntime.load(tmp_path)  # npz without pickles, JSON meta
    mlps = CompilerRuntime(weights, {**meta, "tree_weight": 0.0})
    trees = CompilerRuntime(weights, {**meta, "tree_weight": 1.0})
    features = data.feature_mean + data.feature_std * data.finished_rows[0][:40]
    np.testing.assert_allclose(blended.score_features(features),
                               0.75 * mlps.score_features(features) + 0.25 * trees.score_features(features), rtol=1e-6)
    assert not np.allclose(trees.score_features(features), mlps.score_features(features))
    # A runtime written before the tree member (no forest_* arrays) scores with its MLPs alone.
    old = CompilerRuntime(export_weights(module), meta)
    np.testing.assert_allclose(old.score_features(features), mlps.score_features(features))

