"""Triton matmul configurations on a CUDA GPU, timed with Triton's own ``do_bench``.

The kernel is the classic tiled Triton matmul (fp16 inputs, fp32
accumulation) with the family's knobs as ``tl.constexpr`` and launch
options: block sizes, ``GROUP_M`` (tile swizzling for L2 reuse),
``num_warps`` and ``num_stages`` (software pipelining depth). Each
configuration is checked against ``torch.matmul`` before it is timed. Only
imported where the source is asked for GPU tasks; without a CUDA GPU (or
without Triton) it reports why and measures nothing.
"""

from __future__ import annotations

import json
import time

from ._space import schedule_json


def gpu_available() -> str | None:
    """None when Triton can run here, else why not."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    import importlib.util

    return None if importlib.util.find_spec("triton") else "Triton is not installed"


def gpu_target() -> str:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"cuda-sm{major}{minor}"


def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
        pid = tl.program_id(0)
        grid_m = tl.cdiv(M, BLOCK_M)
        grid_n = tl.cdiv(N, BLOCK_N)
        per_group = GROUP_M * grid_n
        group = pid // per_group
        first_m = group * GROUP_M
        group_size = min(grid_m - first_m, GROUP_M)
        pid_m = first_m + (pid % per_group) % group_size
        pid_n = (pid % per_group) // group_size
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        a = a_ptr + rm[:, None] * stride_am + rk[None, :] * stride_ak
        b = b_ptr + rk[:, None] * stride_bk + rn[None, :] * stride_bn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            left = K - k * BLOCK_K
            tile_a = tl.load(a, mask=(rm[:, None] < M) & (rk[None, :] < left), other=0.0)
            tile_b = tl.load(b, mask=(rk[:, None] < left) & (rn[None, :] < N), other=0.0)
            acc += tl.dot(tile_a, tile_b)
            a += BLOCK_K * stride_ak
            b += BLOCK_K * stride_bk
        c = c_ptr + rm[:, None] * stride_cm + rn[None, :] * stride_cn
        tl.store(c, acc.to(tl.float16), mask=(rm[:, None] < M) & (rn[None, :] < N))

    return matmul_kernel


def measure_triton(tasks, schedules: dict, config: dict, started: float, progress) -> tuple[str, list[dict]]:
    import numpy as np
    import torch
    import triton
    from triton.testing import do_bench

    kernel = _kernel()
    target = gpu_target()
    limit = float(config.get("gpu_time_limit_s", 0.1))
    rows = []
    for n, task in enumerate(tasks.itertuples(), start=1):
        shape = json.loads(task.shape)
        M, N, K = shape["M"], shape["N"], shape["K"]
        generator = torch.Generator(device="cuda").manual_seed(0)
        a = torch.randn((M, K), device="cuda", dtype=torch.float16, generator=generator)
        b = torch.randn((K, N), device="cuda", dtype=torch.float16, generator=generator)
        reference = torch.matmul(a.float(), b.float())
        ok_times = []
        for schedule in schedules[task.task_id]:
            c = torch.empty((M, N), device="cuda", dtype=torch.float16)

            def run(s=schedule, c=c):
                grid = (triton.cdiv(M, s["block_m"]) * triton.cdiv(N, s["block_n"]),)
                kernel[grid](a, b, c, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
                             BLOCK_M=s["block_m"], BLOCK_N=s["block_n"], BLOCK_K=s["block_k"], GROUP_M=s["group_m"],
                             num_warps=s["num_warps"], num_stages=s["num_stages"])

            row = {"task_id": task.task_id, "schedule": schedule_json(schedule), "runtime_s": None, "runtime_std_s": None,
                   "repeats": 1, "error": None, "time_limit_s": limit}
            try:
                c.fill_(float("nan"))
                torch.cuda.synchronize()
                run()  # compiles on first use; the check below is also the warm-up
                torch.cuda.synchronize()
                error = (c.float() - reference).abs().max().item()
                tolerance = 2e-2 * max(1.0, reference.abs().max().item())
                once = time.perf_counter()
                run()
                torch.cuda.synchronize()
                once = time.perf_counter() - once
                if not error <= tolerance:
                    row["error"] = f"wrong result: max abs error {error:.3g} > {tolerance:.3g}"
                elif once > limit:
                    row["error"] = f"timed out: one run took {once:.3g}s > limit {limit:g}s"
                else:
                    # do_bench repeats for ``rep`` milliseconds: long enough for at least 8 samples.
                    rep_ms = max(25.0, 8 * once * 1e3)
                    times = np.asarray(do_bench(run, warmup=5, rep=rep_ms, return_mode="all"), dtype=float) / 1e3
                    median = float(np.median(times))
                    if median > limit:
                        row["error"] = f"timed out: median {median:.3g}s > limit {limit:g}s"
                    else:
                        row.update(runtime_s=median, runtime_std_s=float(np.std(times)), repeats=int(len(times)))
                        ok_times.append(median)
            except Exception as exc:  # out of shared memory, too many registers, ...: a failed configuration
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            row["ts"] = time.time() - started
            rows.append(row)
        best = f"best {min(ok_times) * 1e3:.3g} ms" if ok_times else "no configuration ran"
        progress(f"measured {n}/{len(tasks)} {task.task_id} on {target}: {best}")
    return target, rows
