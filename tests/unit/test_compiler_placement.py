"""Placement between targets: the families that compute the same thing, the checks, and the report's arithmetic."""

from __future__ import annotations

import pytest

from aiprim.primitives.compiler._placement import check_trained_on, counterpart, parse_targets, placement_report
from aiprim.primitives.compiler._space import FAMILIES, TaskError


def test_matmul_has_a_family_on_each_target():
    assert counterpart("matmul", "cuda") == "triton_matmul"
    assert counterpart("triton_matmul", "cpu") == "matmul"
    assert counterpart("matmul", "cpu") == "matmul"
    assert FAMILIES["triton_matmul"].dims == FAMILIES["matmul"].dims  # a task's shape means the same on both


def test_a_computation_without_a_gpu_family_is_one_clear_error():
    with pytest.raises(TaskError, match="conv2d has no kernel family on cuda"):
        counterpart("conv2d", "cuda")


@pytest.mark.parametrize("spec, expected", [
    ("cpu,tpu", "unknown target tpu"),
    (" , ", "no target"),
])
def test_bad_targets_are_named(spec, expected):
    with pytest.raises(TaskError, match=expected):
        parse_targets(spec)


def test_targets_keep_their_order_once_each():
    assert parse_targets("cuda, cpu,cuda") == ["cuda", "cpu"]


def test_a_model_never_trained_on_a_target_refuses_to_predict_there():
    class Runtime:
        kernels = ["conv2d", "matmul", "stencil2d"]

    with pytest.raises(TaskError, match="trained on no triton_matmul task.*its kernels: conv2d, matmul, stencil2d"):
        check_trained_on(Runtime(), "triton_matmul", "cuda")
    check_trained_on(Runtime(), "matmul", "cpu")


def test_report_counts_right_choices_and_regret():
    truths = [{"cpu": 1.0, "cuda": 2.0}, {"cpu": 4.0, "cuda": 1.0}, {"cpu": 3.0, "cuda": 3.0}]
    report = placement_report(["cpu", "cpu", "cuda"], truths)
    assert report["tasks"] == 3
    assert report["accuracy"] == pytest.approx(2 / 3)  # a tie is right either way
    assert report["max_regret"] == pytest.approx(4.0)
    assert report["geomean_regret"] == pytest.approx(4.0 ** (1 / 3))


def test_drawn_gpu_shapes_reach_both_sides_of_the_crossover():
    import numpy as np

    from aiprim.primitives.compiler._source import draw_shape

    rng = np.random.default_rng(0)
    shapes = [draw_shape("triton_matmul", rng) for _ in range(200)]
    flops = np.array([2.0 * s["M"] * s["N"] * s["K"] for s in shapes])
    assert all(v % 16 == 0 for s in shapes for v in s.values())  # one Triton compilation per configuration
    assert (flops < 1e5).any() and (flops > 1e9).any()
