"""Behavioural tests of the learned cost model, trained on kernels measured here.

The premises are measured too: a test that says "tile size 1 is slower" first
times both schedules, so it tests the model against this machine, not against
a belief about it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aiprim.primitives.compiler import _measure
from aiprim.primitives.compiler._space import TaskError

GOOD = {"tile_m": 16, "tile_n": 64, "tile_k": 64, "order": "ikj", "unroll": 4, "vectorize": 1, "threads": 1}
TILE_ONE = {"tile_m": 1, "tile_n": 1, "tile_k": 1, "order": "kji", "unroll": 1, "vectorize": 0, "threads": 1}
UNSEEN = {"M": 144, "N": 176, "K": 208}  # no drawn shape has these sizes


@pytest.fixture(scope="module")
def cost_model(tmp_path_factory):
    from aiprim import primitives
    from tests.conftest import compiler_source

    prim = primitives.get("compiler")
    root = tmp_path_factory.getbasetemp()
    tables, _ = prim.generate(compiler_source(root, families=["matmul"], tasks_per_family=8, schedules_per_task=24,
                                              max_flops=2 ** 23), seed=21)
    # Light regularisation: the defaults' dropout and weight decay are set for generalising from ~30 shapes, and on
    # these 8 they fit the training tasks too loosely for a sharp test of what the model learned from them.
    runtime = prim.train_runtime(tables, {"max_epochs": 40, "hidden": 64, "val_fraction": 0.2, "dropout": 0.1,
                                          "weight_decay": 0.001}, tmp_path_factory.mktemp("cost"))
    return runtime, tables


def _measure_two(shape, schedules, tmp_path):
    libraries, errors = _measure.build("matmul", shape, schedules, tmp_path)
    with _measure.Worker() as worker:
        return [r.runtime_s for r in _measure.measure_task(worker, "matmul", shape, libraries, errors, 0, {"time_limit_s": 2.0})]


def test_ranks_tile_size_one_below_a_good_schedule(cost_model, tmp_path):
    runtime, _ = cost_model
    good_s, bad_s = _measure_two(UNSEEN, [GOOD, TILE_ONE], tmp_path)
    assert good_s * 3 < bad_s, "premise: on this machine tile size 1 with a strided inner loop is much slower"
    task = {"kernel": "matmul", "shape": UNSEEN}
    predicted = runtime.predict(task, [GOOD, TILE_ONE])
    assert predicted[0] < predicted[1]
    assert list(runtime.rank(task, [TILE_ONE, GOOD])) == [1, 0]


def test_a_bigger_problem_is_predicted_slower(cost_model):
    runtime, _ = cost_model
    small = runtime.predict({"kernel": "matmul", "shape": {"M": 64, "N": 64, "K": 64}}, [GOOD])[0]
    large = runtime.predict({"kernel": "matmul", "shape": {"M": 256, "N": 256, "K": 256}}, [GOOD])[0]
    assert large > 4 * small


def test_ranks_training_tasks_better_than_chance(cost_model):
    from aiprim import primitives

    runtime, tables = cost_model
    report = primitives.get("compiler").evaluate(runtime, tables, {})
    assert report["metrics"]["kendall_tau"] > 0.5, report["metrics"]
    assert report["metrics"]["top5_score"] > report["baselines"]["random"]["top5_score"]


def test_scored_beside_its_champion_it_reports_the_paired_noise_of_top1(cost_model):
    """The top-1 guardrail's noise: the standard error of the per-task difference, over the tasks both scored."""
    import numpy as np

    from aiprim import primitives
    from aiprim.primitives._report import CHAMPION_CANDIDATE, LEARNED

    prim = primitives.get("compiler")
    runtime, tables = cost_model

    class Reversed:  # a champion that picks what the model predicts slowest: its top-1 differs
        def score_features(self, x):
            return -runtime.score_features(x)

    report = prim.evaluate({LEARNED: runtime, CHAMPION_CANDIDATE: Reversed()}, tables, {"baselines": False})
    difference = [t[LEARNED]["top1_score"] - t[CHAMPION_CANDIDATE]["top1_score"] for t in report.details["tasks"]]
    assert len(difference) == 8
    expected = np.std(difference, ddof=1) / np.sqrt(len(difference))
    assert report.candidates[LEARNED]["top1_score_paired_se"] == pytest.approx(expected) and expected > 0
    assert "top1_score_paired_se" not in prim.evaluate(runtime, tables, {"baselines": False}).candidates[LEARNED]


def test_bad_schedules_are_named(cost_model):
    runtime, _ = cost_model
    with pytest.raises(TaskError, match="^task: unknown knob prefetch for matmul"):
        runtime.predict({"kernel": "matmul", "shape": UNSEEN}, [{**GOOD, "prefetch": 1}])
    with pytest.raises(TaskError, match="^task t9: schedules miss knobs tile_n, "):
        runtime.predict({"task_id": "t9", "kernel": "matmul", "shape": UNSEEN}, [{"tile_m": GOOD["tile_m"]}])
    with pytest.raises(TaskError, match="^task 'matmul:M=8': give a dict"):
        runtime.predict("matmul:M=8", [GOOD])
    with pytest.raises(TaskError, match="knob tile_m=3 is not one of"):
        runtime.predict({"kernel": "matmul", "shape": UNSEEN}, [{**GOOD, "tile_m": 3}])
    with pytest.raises(TaskError, match="unknown kernel family 'gemv'"):
        runtime.predict({"kernel": "gemv", "shape": UNSEEN}, [GOOD])


def test_numpy_runtime_computes_what_the_torch_model_computes(cost_model, tmp_path):
    from aiprim import primitives
    from aiprim.primitives.compiler._features import featurize_rows
    from aiprim.primitives.compiler._model import CostModule
    from aiprim.primitives.compiler._runtime import CompilerRuntime

    prim = primitives.get("compiler")
    _, tables = cost_model
    params = prim.params({"hidden": 32, "depth": 2, "members": 3})
    datamodule = prim.build_datamodule(tables, params, seed=0)
    module: CostModule = prim.build_module(datamodule, params)
    module.eval()  # dropout off, as in the exported runtime
    prim.export_runtime(module, datamodule, tmp_path)
    blended = prim.load_runtime(tmp_path)
    assert blended.forest is not None and blended.tree_weight == params.tree_weight > 0  # the default blends in trees
    runtime = CompilerRuntime(blended.weights, {**blended.meta, "tree_weight": 0.0})  # its MLP members alone
    x = featurize_rows(tables["tasks"], tables["measurements"].head(20))
    with torch.no_grad():
        expected = module.net(torch.from_numpy((x - datamodule.feature_mean) / datamodule.feature_std)).numpy().mean(axis=0)
    expected = expected * datamodule.target_std + datamodule.target_mean
    assert np.allclose(runtime.score_features(x), expected, rtol=1e-4, atol=1e-4)
