"""The measuring process: loads compiled schedules, checks them against a reference, times them.

It runs apart from the pipeline (``python -m primitives.compiler._worker``)
so that a schedule that crashes or runs away costs only this process: the
parent kills it past the time limit and starts another. Requests and replies
are JSON lines on stdin/stdout.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time

import numpy as np

from ._space import FAMILIES


def buffers_and_reference(kernel: str, shape: dict, seed: int):
    """Random inputs, the output buffer, and the reference output in float64 (interior only for stencils)."""
    rng = np.random.default_rng(seed)
    env = FAMILIES[kernel].env(shape)

    def rand(*dims):
        return rng.uniform(-1.0, 1.0, size=dims).astype(np.float32)

    if kernel == "matmul":
        a, b = rand(env["M"], env["K"]), rand(env["K"], env["N"])
        out = np.zeros((env["M"], env["N"]), np.float32)
        return [a, b, out], a.astype(np.float64) @ b.astype(np.float64), (slice(None), slice(None))
    if kernel == "conv2d":
        x, w = rand(env["N"], env["C"], env["H"], env["W"]), rand(env["K"], env["C"], env["R"], env["S"])
        out = np.zeros((env["N"], env["K"], env["P"], env["Q"]), np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (env["R"], env["S"]), axis=(2, 3))
        reference = np.einsum("ncpqrs,kcrs->nkpq", windows, w.astype(np.float64), optimize=True)
        return [x, w, out], reference, (slice(None),) * 4
    if kernel == "stencil2d":
        x = rand(env["H"], env["W"])
        out = np.zeros_like(x)
        x64 = x.astype(np.float64)
        reference = 0.2 * (x64[1:-1, 1:-1] + x64[:-2, 1:-1] + x64[2:, 1:-1] + x64[1:-1, :-2] + x64[1:-1, 2:])
        return [x, out], reference, (slice(1, -1), slice(1, -1))
    raise ValueError(f"the CPU worker cannot run {kernel}")


class Task:
    def __init__(self, kernel: str, shape: dict, library: str, seed: int):
        self.buffers, self.reference, self.window = buffers_and_reference(kernel, shape, seed)
        self.library = ctypes.CDLL(library)
        self.arguments = [ctypes.c_void_p(b.ctypes.data) for b in self.buffers]
        self.tolerance = 1e-3 * max(1.0, float(np.abs(self.reference).max()))

    def call(self, function) -> float:
        started = time.perf_counter()
        function(*self.arguments)
        return time.perf_counter() - started

    def verify(self, symbol: str, time_limit_s: float) -> dict:
        function = self.library[symbol]
        function.restype = None
        out = self.buffers[-1]
        out.fill(np.nan)  # a schedule that skips part of the output must not inherit the last one's values
        first = self.call(function)
        error = float(np.max(np.abs(out[self.window].astype(np.float64) - self.reference)))
        if not np.isfinite(error) or error > self.tolerance:
            return {"error": f"wrong result: max abs error {error:.3g} > {self.tolerance:.3g}"}
        if first > time_limit_s:
            return {"error": f"timed out: one run took {first:.3g}s > limit {time_limit_s:g}s"}
        return {"first_s": first}

    def time(self, symbol: str, first_s: float, repeats: int, min_sample_s: float) -> dict:
        function = self.library[symbol]
        number = max(1, int(np.ceil(min_sample_s / max(first_s, 1e-9))))  # fast kernels: several calls per sample
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(number):
                function(*self.arguments)
            samples.append((time.perf_counter() - started) / number)
        return {"runtime_s": float(np.median(samples)), "runtime_std_s": float(np.std(samples)), "repeats": repeats, "number": number}


def main() -> None:
    task = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "task":
                task = Task(request["kernel"], request["shape"], request["library"], int(request["seed"]))
                reply = {"ok": True}
            elif request["op"] == "verify":
                reply = task.verify(request["symbol"], float(request["time_limit_s"]))
            elif request["op"] == "time":
                reply = task.time(request["symbol"], float(request["first_s"]), int(request["repeats"]), float(request["min_sample_s"]))
            else:
                reply = {"error": f"unknown request {request['op']!r}"}
        except Exception as exc:  # report, never die: the parent decides what a failure means
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
