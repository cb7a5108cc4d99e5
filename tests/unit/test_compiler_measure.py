"""The measuring machinery on real compiled code: every schedule compiles and is right, and a wrong,
runaway or crashing schedule is recorded with its error while the next one is still measured."""

from __future__ import annotations

import itertools
import subprocess

import numpy as np
import pytest

from aiprim.primitives.compiler import _measure
from aiprim.primitives.compiler._codegen import COMPILE_FLAGS
from aiprim.primitives.compiler._space import FAMILIES, TaskError, parse_schedule, parse_shape, sample_schedules, space_size

SHAPES = {"matmul": {"M": 19, "N": 23, "K": 17}, "conv2d": {"N": 2, "C": 3, "H": 9, "W": 11, "K": 5, "R": 3, "S": 2},
          "stencil2d": {"H": 21, "W": 37}}


def _corner_schedules(kernel: str) -> list[dict]:
    """Every loop order, each with the extreme tiles, unroll, vectorisation and threads."""
    knobs = FAMILIES[kernel].knobs
    out = []
    for order, extreme in itertools.product(knobs["order"], (0, -1)):
        schedule = {k: v[extreme] for k, v in knobs.items()}
        schedule["order"] = order
        schedule["vectorize"] = int(extreme == -1)
        out.append(schedule)
    return out


@pytest.mark.parametrize("kernel", sorted(SHAPES))
def test_every_loop_order_compiles_and_matches_the_reference(kernel, tmp_path):
    schedules = _corner_schedules(kernel) + sample_schedules(kernel, 6, np.random.default_rng(0))
    libraries, errors = _measure.build(kernel, SHAPES[kernel], schedules, tmp_path)
    assert errors == [None] * len(schedules)
    with _measure.Worker() as worker:
        results = _measure.measure_task(worker, kernel, SHAPES[kernel], libraries, errors, 0, {"repeats": 5})
    assert [r.error for r in results] == [None] * len(schedules)
    assert all(r.runtime_s > 0 and r.runtime_std_s >= 0 and r.repeats == 5 for r in results)


def _library(tmp_path, body: str) -> str:
    source = tmp_path / "k.c"
    source.write_text("#include <string.h>\n#include <signal.h>\n" + body)
    out = tmp_path / "k.so"
    subprocess.run([_measure.compiler(), *COMPILE_FLAGS, str(source), "-o", str(out)], check=True)
    return str(out)


def test_wrong_runaway_and_crashing_schedules_are_recorded_and_measuring_goes_on(tmp_path):
    shape = {"H": 16, "W": 16}
    library = _library(tmp_path, """
void s0(const float *X, float *Y) { memset(Y, 0, 16 * 16 * sizeof(float)); }             /* wrong result */
void s1(const float *X, float *Y) { volatile long i = 0; for (;;) i++; }                 /* never returns */
void s2(const float *X, float *Y) { raise(SIGSEGV); }                                     /* crashes */
void s3(const float *X, float *Y) {
  for (int i = 1; i < 15; i++) for (int j = 1; j < 15; j++)
    Y[i*16+j] = 0.2f * (X[i*16+j] + X[(i-1)*16+j] + X[(i+1)*16+j] + X[i*16+j-1] + X[i*16+j+1]);
}
""")
    with _measure.Worker() as worker:
        results = _measure.measure_task(worker, "stencil2d", shape, [library] * 4, [None, None, None, None], 0,
                                        {"time_limit_s": 0.2, "repeats": 5})
    assert results[0].error.startswith("wrong result") and results[0].runtime_s is None
    assert results[1].error.startswith("timed out") and results[1].runtime_s is None
    assert results[2].error.startswith("crashed") and results[2].runtime_s is None
    assert results[3].error is None and results[3].runtime_s > 0


def test_a_schedule_that_does_not_compile_is_recorded(tmp_path, monkeypatch):
    from aiprim.primitives.compiler import _codegen

    schedules = sample_schedules("stencil2d", 3, np.random.default_rng(1))
    real = _codegen.function_source

    def broken_second(kernel, shape, schedule, symbol):
        text = real(kernel, shape, schedule, symbol)
        return text.replace("{", "{ this is not C;", 1) if schedule == schedules[1] else text

    monkeypatch.setattr(_codegen, "function_source", broken_second)
    libraries, errors = _measure.build("stencil2d", {"H": 20, "W": 20}, schedules, tmp_path)
    assert errors[0] is None and errors[2] is None
    assert errors[1].startswith("compile failed: kernels.c:") and libraries[1] is None


def test_shapes_and_schedules_are_checked():
    assert parse_shape("matmul", '{"M": 4, "N": 5, "K": 6}') == {"M": 4, "N": 5, "K": 6}
    with pytest.raises(TaskError, match="task t: matmul shape misses dimension K"):
        parse_shape("matmul", {"M": 4, "N": 5}, "t")
    with pytest.raises(TaskError, match="task t: dimension N=2.5 must be a positive integer"):
        parse_shape("matmul", {"M": 4, "N": 2.5, "K": 1}, "t")
    with pytest.raises(TaskError, match="task t: conv2d shape .* leaves no output"):
        parse_shape("conv2d", {"N": 1, "C": 1, "H": 2, "W": 9, "K": 1, "R": 3, "S": 3}, "t")
    schedule = {k: v[0] for k, v in FAMILIES["stencil2d"].knobs.items()}
    assert parse_schedule("stencil2d", schedule) == schedule
    with pytest.raises(TaskError, match="task t: unknown knob swizzle"):
        parse_schedule("stencil2d", {**schedule, "swizzle": 1}, "t")
    with pytest.raises(TaskError, match="task t: schedule misses knob threads"):
        parse_schedule("stencil2d", {k: v for k, v in schedule.items() if k != "threads"}, "t")


def test_schedule_sampling_is_distinct_and_covers_small_spaces():
    rng = np.random.default_rng(0)
    drawn = sample_schedules("stencil2d", 50, rng)
    assert len({str(sorted(s.items())) for s in drawn}) == 50
    everything = sample_schedules("stencil2d", 10 ** 6, rng)
    assert len(everything) == space_size("stencil2d")
    assert all(parse_schedule("stencil2d", s) for s in everything[:50])


def test_samples_are_taken_in_rounds_over_every_schedule_of_a_task(tmp_path):
    """Interleaving is what keeps a burst of interference from landing on every sample of one schedule."""

    class RecordingWorker(_measure.Worker):
        def __init__(self):
            super().__init__()
            self.timed: list[str] = []

        def ask(self, request, timeout_s):
            if request["op"] == "time":
                self.timed.append(request["symbol"])
            return super().ask(request, timeout_s)

    schedules = sample_schedules("stencil2d", 4, np.random.default_rng(2))
    libraries, errors = _measure.build("stencil2d", SHAPES["stencil2d"], schedules, tmp_path)
    with RecordingWorker() as worker:
        results = _measure.measure_task(worker, "stencil2d", SHAPES["stencil2d"], libraries, errors, 0, {"repeats": 3})
    rounds = [worker.timed[i:i + 4] for i in range(0, len(worker.timed), 4)]
    assert len(rounds) == 3 and all(sorted(r) == ["s0", "s1", "s2", "s3"] for r in rounds)
    assert all(r.error is None and r.repeats == 3 for r in results)


def test_a_task_that_cannot_be_loaded_fails_its_schedules_once(tmp_path):
    """A library the worker cannot load fails every schedule of it with that reason, asked once, not per sample."""

    class CountingWorker(_measure.Worker):
        def __init__(self):
            super().__init__()
            self.loads = 0

        def ask(self, request, timeout_s):
            self.loads += request["op"] == "task"
            return super().ask(request, timeout_s)

    not_a_library = tmp_path / "broken.so"
    not_a_library.write_text("not a shared library")
    with CountingWorker() as worker:
        results = _measure.measure_task(worker, "stencil2d", SHAPES["stencil2d"], [str(not_a_library)] * 3,
                                        [None] * 3, 0, {"repeats": 3})
    assert all(r.error.startswith("setup failed: OSError") and r.runtime_s is None for r in results)
    assert worker.loads == 1
