"""C code for one schedule of a CPU kernel family, with every knob a compile-time constant.

Why the system C compiler (GCC through ``cc``), not numba or TVM: knobs must
become real compiled code, and GCC gives each of them a direct, documented
lever: tile sizes and the shape are literal loop bounds, the loop order is
the emitted nest, ``#pragma GCC unroll`` unrolls the innermost loop, a
per-function ``optimize("tree-vectorize", ...)`` attribute with ``#pragma
GCC ivdep`` vectorises it (everything else is built with the vectoriser
off, so ``vectorize=0`` means scalar code; ``omp simd`` would be the obvious
pragma, but GCC refuses it together with ``GCC unroll``), and
``#pragma omp parallel for num_threads(T)`` shares the outer tiles among
threads. Every schedule of a task is one function in one shared library, so
a task costs one compiler start; numba would pay an LLVM JIT per schedule
and TVM is a large dependency for the same loops.
"""

from __future__ import annotations

from ._space import FAMILIES, extent_of

COMPILE_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-tree-vectorize", "-fno-tree-slp-vectorize",
                 "-fPIC", "-shared", "-std=gnu11")

# Reassociation lets GCC vectorise the float reductions, as ``omp simd reduction`` would.
VECTORIZE_ATTRIBUTE = '__attribute__((optimize("tree-vectorize,associative-math,no-signed-zeros,no-trapping-math")))'

_STATEMENTS = {
    # (output index, update expression); loop variables are the family's loop names.
    "matmul": ("i*{N}+j", "A[i*{K}+k] * B[k*{N}+j]"),
    "conv2d": ("((n*{K}+k)*{P}+p)*{Q}+q", "I[((n*{C}+c)*{H}+p+r)*{W}+q+s] * F[((k*{C}+c)*{R}+r)*{S}+s]"),
}

_SIGNATURES = {
    "matmul": "const float *restrict A, const float *restrict B, float *restrict C",
    "conv2d": "const float *restrict I, const float *restrict F, float *restrict O",
    "stencil2d": "const float *restrict X, float *restrict Y",
}

_OUTPUT = {"matmul": ("C", "M*N"), "conv2d": ("O", "N*K*P*Q"), "stencil2d": (None, None)}


def function_source(kernel: str, shape: dict, schedule: dict, symbol: str) -> str:
    family = FAMILIES[kernel]
    env = family.env(shape)
    lines = [VECTORIZE_ATTRIBUTE] if schedule["vectorize"] else []
    lines.append(f"void {symbol}({_SIGNATURES[kernel]}) {{")
    out, size = _OUTPUT[kernel]
    if out:
        lines.append(f"  memset({out}, 0, sizeof(float) * {extent_of(size, env)}L);")
    outer = ["n"] if kernel == "conv2d" else []
    tiled = [loop for loop in family.loops if loop.tile_knob]
    threads = int(schedule["threads"])
    collapse = len(outer) + len(family.parallel_loops)
    if threads > 1:
        lines.append(f"  #pragma omp parallel for collapse({collapse}) num_threads({threads}) schedule(static)")
    depth = 1
    if outer:
        lines.append(f"  for (int n = 0; n < {env['N']}; n++)")
        depth += 1
    for loop in tiled:
        tile, extent = int(schedule[loop.tile_knob]), extent_of(loop.extent, env)
        lines.append("  " * depth + f"for (int {loop.name}0 = 0; {loop.name}0 < {extent}; {loop.name}0 += {tile})")
        depth += 1
    lines.append("  " * (depth - 1) + "{")
    for loop in tiled:
        tile, extent = int(schedule[loop.tile_knob]), extent_of(loop.extent, env)
        lines.append("  " * depth + f"const int {loop.name}1 = {loop.name}0 + {tile} < {extent} ? {loop.name}0 + {tile} : {extent};")
    loops = {loop.name: loop for loop in family.loops}
    order = schedule["order"]
    for position, name in enumerate(order):
        loop = loops[name]
        innermost = position == len(order) - 1
        bounds = (f"{name}0", f"{name}1") if loop.tile_knob else ("0", str(extent_of(loop.extent, env)))
        pad = "  " * depth
        if innermost:
            lines.extend(_innermost(kernel, env, schedule, loop, bounds, pad))
        else:
            lines.append(pad + f"for (int {name} = {bounds[0]}; {name} < {bounds[1]}; {name}++)")
            depth += 1
    lines.append("  " * (len(outer) + len(tiled)) + "}")
    lines.append("}")
    return "\n".join(lines)


def _innermost(kernel, env, schedule, loop, bounds, pad) -> list[str]:
    pragmas = (["#pragma GCC ivdep"] if schedule["vectorize"] else []) + [f"#pragma GCC unroll {int(schedule['unroll'])}"]
    header = f"for (int {loop.name} = {bounds[0]}; {loop.name} < {bounds[1]}; {loop.name}++)"
    if kernel == "stencil2d":
        w = env["W"]
        body = (f"Y[(i+1)*{w}+j+1] = 0.2f * (X[(i+1)*{w}+j+1] + X[i*{w}+j+1] + X[(i+2)*{w}+j+1]"
                f" + X[(i+1)*{w}+j] + X[(i+1)*{w}+j+2]);")
        return [pad + p for p in pragmas] + [pad + header, pad + "  " + body]
    out_index, update = (part.format(**env) for part in _STATEMENTS[kernel])
    out = _OUTPUT[kernel][0]
    if not loop.reduction:
        return [pad + p for p in pragmas] + [pad + header, pad + f"  {out}[{out_index}] += {update};"]
    # The reduction loop runs innermost: accumulate in a register so the vectoriser may reassociate.
    return ([pad + "{", pad + f"  float acc = {out}[{out_index}];"]
            + [pad + "  " + p for p in pragmas]
            + [pad + "  " + header, pad + f"    acc += {update};", pad + f"  {out}[{out_index}] = acc;", pad + "}"])


def library_source(kernel: str, shape: dict, schedules: list[dict], symbols: list[str]) -> str:
    parts = ["#include <string.h>", ""]
    parts += [function_source(kernel, shape, s, name) + "\n" for s, name in zip(schedules, symbols)]
    return "\n".join(parts)
