"""Compile every schedule of a task and time it in a worker process.

Protocol per task: each schedule runs once, checked against a float64
reference (it is also the warm-up); then ``repeats`` rounds each take one
timed sample of every schedule, in a fresh order per round (several calls per
sample for kernels under ``min_sample_s``). The median of a schedule's samples
is its runtime and their standard deviation its spread. A schedule that fails
to compile, computes a wrong result, runs past ``time_limit_s`` or crashes the
worker is recorded with its error, and the others go on.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import selectors
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._codegen import COMPILE_FLAGS, library_source

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    runtime_s: float | None = None
    runtime_std_s: float | None = None
    repeats: int = 1
    error: str | None = None


class CompilerNotFound(RuntimeError):
    pass


def compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise CompilerNotFound("no C compiler found (set CC, or install gcc)")


def cpu_target() -> str:
    """e.g. ``x86_64-avx512-2c``: the instruction set the kernels are built for and the cores they may use."""
    flags = ""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        pass
    isa = "avx512" if " avx512f" in flags else "avx2" if " avx2" in flags else "sse" if " sse2" in flags else "generic"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.machine()}-{isa}-{cores}c"


def build(kernel: str, shape: dict, schedules: list[dict], cache_dir: Path) -> tuple[list[str | None], list[str | None]]:
    """One shared library per task; per schedule (library path, None) or (None, compile error)."""
    symbols = [f"s{i}" for i in range(len(schedules))]
    source = library_source(kernel, shape, schedules, symbols)
    library = _compile(source, cache_dir)
    if library[0] is not None:
        return [library[0]] * len(schedules), [None] * len(schedules)
    # The batch failed: compile each schedule alone so one bad schedule does not sink its task.
    paths, errors = [], []
    for schedule, symbol in zip(schedules, symbols):
        path, error = _compile(library_source(kernel, shape, [schedule], [symbol]), cache_dir)
        paths.append(path)
        errors.append(None if path else f"compile failed: {error}")
    return paths, errors


def _compile(source: str, cache_dir: Path) -> tuple[str | None, str | None]:
    cc = compiler()
    digest = hashlib.sha256((cc + " ".join(COMPILE_FLAGS) + cpu_target() + source).encode()).hexdigest()[:20]
    cache_dir.mkdir(parents=True, exist_ok=True)
    library = cache_dir / f"k{digest}.so"
    if library.exists():
        return str(library), None
    with tempfile.TemporaryDirectory() as tmp:
        c_file = Path(tmp) / "kernels.c"
        c_file.write_text(source)
        built = Path(tmp) / "kernels.so"
        result = subprocess.run([cc, *COMPILE_FLAGS, str(c_file), "-o", str(built)], capture_output=True, text=True)
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if "error" in line] or result.stderr.splitlines() or ["unknown"]
            return None, lines[0].replace(str(c_file), "kernels.c").strip()[:300]
        os.replace(built, library)  # atomic: a concurrent build of the same source is harmless
    return str(library), None


def build_all(jobs: list[tuple[str, dict, list[dict]]], cache_dir: Path, workers: int | None = None, progress=None):
    """Compile every task's library, in parallel (nothing is timed while this runs); ``progress()`` after each task."""
    workers = workers or max(1, (os.cpu_count() or 1))
    results = [None] * len(jobs)
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(build, kernel, shape, schedules, cache_dir): i for i, (kernel, shape, schedules) in enumerate(jobs)}
        for future in futures:
            results[futures[future]] = future.result()
            if progress:
                progress()
    return results


class Worker:
    """The measuring subprocess, restarted after a crash or a runaway schedule."""

    def __init__(self):
        self.process = None
        self.failure = ""

    def start(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
               "OMP_WAIT_POLICY": "PASSIVE", "OMP_PROC_BIND": "false"}
        self.process = subprocess.Popen([sys.executable, "-m", "aiprim.primitives.compiler._worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env)

    def ask(self, request: dict, timeout_s: float) -> dict | None:
        """The reply, or None when the worker crashed or ran past the timeout (``failure`` then says which)."""
        if self.process is None or self.process.poll() is not None:
            self.start()
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout_s)
        selector.close()
        line = self.process.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        if ready:  # end of file: the worker died under this schedule
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            self.failure = f"crashed (signal {-code})" if code is not None and code < 0 else f"crashed (exit {code})"
        else:
            self.failure = f"timed out: no result within {timeout_s:.3g}s"
        self.stop()
        return None

    def stop(self):
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class _SetupFailed(RuntimeError):
    """The worker could not load the task: nothing more of its library can be measured."""


def measure_task(worker: Worker, kernel: str, shape: dict, libraries: list, errors: list, seed: int, config: dict) -> list[Result]:
    """Verify every schedule of one task, then time them in rounds: each round takes one sample of every schedule
    still standing, in a fresh order. Interference from other processes and the machine's drift then hit all of a
    task's schedules alike, where back-to-back samples of one schedule would share one burst and its median keep it."""
    repeats = max(1, int(config.get("repeats", 5)))
    time_limit = float(config.get("time_limit_s", 0.5))
    min_sample = float(config.get("min_sample_s", 1e-3))
    results = [Result(error=error) if error else None for error in errors]
    order = np.random.default_rng(seed)
    # Schedules share one library unless their batch failed to compile; each library is loaded once.
    for library in dict.fromkeys(lib for lib, error in zip(libraries, errors) if not error):
        members = [i for i, (lib, error) in enumerate(zip(libraries, errors)) if lib == library and not error]
        loaded = False

        def ask(request: dict, timeout_s: float) -> dict:
            nonlocal loaded
            if not loaded:
                reply = worker.ask({"op": "task", "kernel": kernel, "shape": shape, "library": library, "seed": seed}, 60.0)
                if reply is None or "error" in reply:
                    raise _SetupFailed(f"setup failed: {reply['error'] if reply else worker.failure}")
                loaded = True
            reply = worker.ask(request, timeout_s)
            if reply is None:
                loaded = False  # the worker was stopped: the next request reloads the task
                return {"error": worker.failure}
            return reply

        first: dict[int, float] = {}
        samples: dict[int, list[float]] = {}
        try:
            for index in members:
                reply = ask({"op": "verify", "symbol": f"s{index}", "time_limit_s": time_limit}, 2 * time_limit + 2.0)
                if "error" in reply:
                    results[index] = Result(error=reply["error"])
                else:
                    first[index], samples[index] = float(reply["first_s"]), []
            for _ in range(repeats):
                for index in order.permutation(sorted(samples)):
                    index = int(index)
                    if results[index] is not None:  # failed in an earlier round
                        continue
                    calls = max(1, round(min_sample / max(first[index], 1e-9)))
                    budget = 2.0 * max(first[index], min_sample) * calls + 2.0
                    reply = ask({"op": "time", "symbol": f"s{index}", "first_s": first[index], "repeats": 1,
                                 "min_sample_s": min_sample}, budget)
                    if "error" in reply:
                        results[index] = Result(error=reply["error"])
                    else:
                        samples[index].append(float(reply["runtime_s"]))
        except _SetupFailed as failed:  # what the task left unmeasured fails with it, and nothing asks again
            for index in members:
                if results[index] is None:
                    results[index] = Result(error=str(failed))
            continue
        for index, taken in samples.items():
            if results[index] is None:
                results[index] = Result(float(np.median(taken)), float(np.std(taken)), len(taken))
    return results
