"""TenSet-style features of (task, schedule) pairs, computed column-wise with numpy.

Every family is featurised from its loop-nest description in ``_space``,
into one fixed vector whose slots mean the same thing for every family:
work and compulsory traffic; per tiled loop the tile size and its boundary
waste; what the innermost loop does to each buffer (contiguous, strided or
invariant access, a reduction or not); the tile's working set against the
caches of the machine that runs it and the traffic it implies; unrolling,
vectorisation, threads and how evenly the parallel tiles share out. The
model then learns across families instead of one model per family.

The loop over families and loop orders touches a handful of values, never
one Python iteration per schedule.
"""

from __future__ import annotations

import json

import numpy as np

from ._space import FAMILIES, derived_dims, extent_of

# The caches a tile's working set is compared with when the machine's are not known: snapshots written before
# tasks recorded ``l1_bytes``/``l2_bytes``, and GPU families (their tiles live in shared memory, not a CPU cache).
# These are the sizes the features always used, so runtimes trained on such snapshots keep meaning the same.
FALLBACK_L1_BYTES = 48 * 1024
FALLBACK_L2_BYTES = 2 * 1024 * 1024
ELEMENT_BYTES = 4
MAX_TILED = 3
MAX_ORDERS = 6
GPU_KNOBS = ("num_warps", "num_stages", "group_m")

FEATURE_NAMES = (
    [f"family_{name}" for name in FAMILIES]
    + ["log_flops", "log_bytes", "log_intensity"]
    + [f"log_tile_{i}" for i in range(MAX_TILED)] + [f"tile_fraction_{i}" for i in range(MAX_TILED)]
    + [f"boundary_waste_{i}" for i in range(MAX_TILED)]
    + [f"order_{i}" for i in range(MAX_ORDERS)]
    + ["inner_log_extent", "inner_reduction", "inner_inputs_contiguous", "inner_inputs_strided", "inner_inputs_invariant",
       "inner_output_contiguous", "inner_output_strided", "inner_output_invariant", "inner_log_max_stride",
       "second_inputs_contiguous", "second_log_max_stride", "log_inner_entries"]
    + ["log_footprint", "fits_l1", "fits_l2", "log_traffic", "log_traffic_per_flop", "log_tiles"]
    + ["log_unroll", "log_unroll_used", "vectorize", "vectorize_contiguous", "vectorize_reduction"]
    + ["threads", "log_parallel_chunks", "thread_balance", "log_flops_per_chunk"]
    + [f"log_{k}" for k in GPU_KNOBS]
)
N_FEATURES = len(FEATURE_NAMES)
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}

# What a member of the learned model reads (CompilerParams.views). "compact" is the features gradient-boosted
# trees draw most of their gain from on the default snapshots (the family, vectorisation, threads, the innermost
# loop's extent and strides, sizes, tiles and traffic), without the loop-order one-hots, boundary waste and flags.
# One member on it beside members on everything generalised better to unseen shapes than members on everything
# alone: the members then err differently, and their mean cancels more of it (benchmarks/RESULTS.md).
VIEWS = {
    "all": tuple(FEATURE_NAMES),
    "compact": tuple([f"family_{name}" for name in FAMILIES]
                     + ["vectorize", "threads", "inner_log_extent", "log_flops", "inner_log_max_stride", "log_intensity",
                        "log_traffic_per_flop", "inner_inputs_strided", "log_flops_per_chunk", "log_inner_entries", "log_bytes",
                        "log_traffic", "log_parallel_chunks", "log_tiles", "log_footprint", "vectorize_contiguous",
                        "second_log_max_stride", "inner_output_contiguous"]
                     + [f"{kind}_{i}" for kind in ("log_tile", "tile_fraction") for i in range(MAX_TILED)]
                     + [f"log_{k}" for k in GPU_KNOBS]),
}


def view_columns(view: str) -> list[int]:
    """Feature indices a member on ``view`` reads, in feature order."""
    if view not in VIEWS:
        raise ValueError(f"unknown feature view {view!r} (known: {', '.join(VIEWS)})")
    wanted = set(VIEWS[view])
    return [i for i, name in enumerate(FEATURE_NAMES) if name in wanted]


def _log2(x) -> np.ndarray:
    return np.log2(np.maximum(np.asarray(x, dtype=np.float64), 1e-30))


def _evaluate(expression: str, env: dict) -> np.ndarray:
    """A family's expression over arrays of dimensions (``extent_of`` for many shapes at once)."""
    return np.asarray(eval(expression, {"__builtins__": {}}, env), dtype=np.float64)  # family text, never user text


def _cache_bytes(value, fallback: int, n: int) -> np.ndarray:
    """A cache size per schedule: ``value`` (a scalar or n values, NaN where unknown) or else ``fallback``."""
    if value is None:
        return np.full(n, float(fallback))
    value = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,))
    return np.where(np.isnan(value), float(fallback), value)


def featurize_family(kernel: str, shape: dict, knobs: dict, caches=None) -> np.ndarray:
    """Features of n schedules of one family: ``shape`` and ``knobs`` map names to arrays of length n (or scalars).

    ``caches`` is ``(l1_bytes, l2_bytes)`` of the machine the schedules run on, each a scalar or n values (NaN
    where unknown); None or NaN is ``FALLBACK_L1_BYTES``/``FALLBACK_L2_BYTES``.
    """
    family = FAMILIES[kernel]
    n = max(len(np.atleast_1d(v)) for v in list(knobs.values()) + list(shape.values()))
    env = {d: np.broadcast_to(np.asarray(shape[d], dtype=np.int64), (n,)) for d in family.dims}
    env.update(derived_dims(kernel, env))
    out = np.zeros((n, N_FEATURES), dtype=np.float64)

    def put(name, value):
        out[:, _INDEX[name]] = value

    put(f"family_{kernel}", 1.0)
    flops = _evaluate(family.flops, env)
    compulsory = sum(_evaluate(b.elements, env) for b in family.buffers) * ELEMENT_BYTES
    put("log_flops", _log2(flops))
    put("log_bytes", _log2(compulsory))
    put("log_intensity", _log2(flops / compulsory))

    extents, tiles = {}, {}
    for loop in family.loops:
        extents[loop.name] = np.broadcast_to(_evaluate(loop.extent, env), (n,)).astype(np.float64)
        tile = np.asarray(knobs[loop.tile_knob], dtype=np.float64) if loop.tile_knob else extents[loop.name]
        tiles[loop.name] = np.minimum(tile, extents[loop.name])
    n_tiles = np.ones(n)
    for i, loop in enumerate(lp for lp in family.loops if lp.tile_knob):
        count = np.ceil(extents[loop.name] / tiles[loop.name])
        n_tiles = n_tiles * count
        put(f"log_tile_{i}", _log2(tiles[loop.name]))
        put(f"tile_fraction_{i}", tiles[loop.name] / extents[loop.name])
        put(f"boundary_waste_{i}", (count * tiles[loop.name] - extents[loop.name]) / (count * tiles[loop.name]))
    batch = env["N"].astype(np.float64) if kernel == "conv2d" else np.ones(n)

    # Working set of one tile, and the traffic if every tile reloads it.
    footprint = np.zeros(n)
    for buffer in family.buffers:
        elements = np.ones(n)
        for loop_name in buffer.strides:
            halo = _evaluate(buffer.halo[loop_name], env) if loop_name in buffer.halo else 0.0
            elements = elements * (tiles[loop_name] + halo)
        footprint += elements * ELEMENT_BYTES
    traffic = np.maximum(footprint * n_tiles * batch, compulsory)
    put("log_footprint", _log2(footprint))
    l1_bytes, l2_bytes = (None, None) if caches is None else caches
    put("fits_l1", (footprint <= _cache_bytes(l1_bytes, FALLBACK_L1_BYTES, n)).astype(float))
    put("fits_l2", (footprint <= _cache_bytes(l2_bytes, FALLBACK_L2_BYTES, n)).astype(float))
    put("log_traffic", _log2(traffic))
    put("log_traffic_per_flop", _log2(traffic / flops))
    put("log_tiles", _log2(n_tiles * batch))

    orders = family.knobs.get("order", ("".join(loop.name for loop in family.loops),))
    order = np.asarray(knobs["order"]) if "order" in knobs else np.full(n, orders[0])
    vectorize = np.asarray(knobs.get("vectorize", 1), dtype=np.float64) * np.ones(n)
    unroll = np.asarray(knobs.get("unroll", 1), dtype=np.float64) * np.ones(n)
    loops = {loop.name: loop for loop in family.loops}
    for index, name in enumerate(orders):
        mask = order == name
        if not mask.any():
            continue
        put_masked = lambda feature, value: out.__setitem__((mask, _INDEX[feature]), np.broadcast_to(value, (n,))[mask])  # noqa: E731
        put_masked(f"order_{index}", 1.0)
        inner, second = loops[name[-1]], loops[name[-2]]
        stride = {b.name: _stride(b, inner.name, env, n) for b in family.buffers}
        stride2 = {b.name: _stride(b, second.name, env, n) for b in family.buffers}
        inputs = [b for b in family.buffers if not b.output]
        output = next(b for b in family.buffers if b.output)
        contiguous = sum((stride[b.name] == 1).astype(float) for b in inputs)
        put_masked("inner_log_extent", _log2(tiles[inner.name]))
        put_masked("inner_reduction", float(inner.reduction))
        put_masked("inner_inputs_contiguous", contiguous)
        put_masked("inner_inputs_strided", sum((stride[b.name] > 1).astype(float) for b in inputs))
        put_masked("inner_inputs_invariant", sum((stride[b.name] == 0).astype(float) for b in inputs))
        put_masked("inner_output_contiguous", (stride[output.name] == 1).astype(float))
        put_masked("inner_output_strided", (stride[output.name] > 1).astype(float))
        put_masked("inner_output_invariant", (stride[output.name] == 0).astype(float))
        put_masked("inner_log_max_stride", _log2(np.maximum(1, np.max([stride[b.name] for b in family.buffers], axis=0))))
        put_masked("second_inputs_contiguous", sum((stride2[b.name] == 1).astype(float) for b in inputs))
        put_masked("second_log_max_stride", _log2(np.maximum(1, np.max([stride2[b.name] for b in family.buffers], axis=0))))
        iterations = np.prod([extents[lp.name] for lp in family.loops], axis=0) * batch
        put_masked("log_inner_entries", _log2(iterations / tiles[inner.name]))
        all_contiguous = ((contiguous == len(inputs)) & (stride[output.name] <= 1)).astype(float)
        put_masked("vectorize_contiguous", vectorize * all_contiguous)
        put_masked("vectorize_reduction", vectorize * float(inner.reduction))
        put_masked("log_unroll_used", _log2(np.minimum(unroll, tiles[inner.name])))
    put("log_unroll", _log2(unroll))
    put("vectorize", vectorize)

    threads = np.asarray(knobs.get("threads", 1), dtype=np.float64) * np.ones(n)
    chunks = batch * np.prod([np.ceil(extents[p] / tiles[p]) for p in family.parallel_loops], axis=0)
    put("threads", threads)
    put("log_parallel_chunks", _log2(chunks))
    put("thread_balance", chunks / (np.ceil(chunks / threads) * threads))
    put("log_flops_per_chunk", _log2(flops / chunks))
    for knob in GPU_KNOBS:
        if knob in knobs:
            put(f"log_{knob}", _log2(np.asarray(knobs[knob], dtype=np.float64)))
    return out.astype(np.float32)


def _stride(buffer, loop_name: str, env: dict, n: int) -> np.ndarray:
    if loop_name not in buffer.strides:
        return np.zeros(n)
    return np.broadcast_to(_evaluate(buffer.strides[loop_name], env), (n,)).astype(np.float64)


def featurize_task(kernel: str, shape: dict, schedules, caches=None) -> np.ndarray:
    """Features of many schedules of one task; ``schedules`` is a list of dicts or a DataFrame of knobs.

    ``caches`` as in ``featurize_family``: the runtime passes ``_machine.machine_caches(kernel)``.
    """
    import pandas as pd

    frame = schedules if isinstance(schedules, pd.DataFrame) else pd.DataFrame(list(schedules))
    return featurize_family(kernel, shape, {k: frame[k].to_numpy() for k in frame.columns}, caches)


CACHE_COLUMNS = ("l1_bytes", "l2_bytes")


def _row_caches(info, task_ids):
    """Per row, the task's ``(l1_bytes, l2_bytes)`` (NaN where null), or None when the snapshot has neither column."""
    if not any(c in info.columns for c in CACHE_COLUMNS):
        return None
    out = []
    for column in CACHE_COLUMNS:
        if column not in info.columns:
            out.append(np.full(len(task_ids), np.nan))
            continue
        # Nullable Int64 (as snapshots are read) to float, so a null is NaN and falls back.
        per_task = info[column].to_numpy(dtype=np.float64, na_value=np.nan)
        out.append(task_ids.map(dict(zip(info.index, per_task))).to_numpy(dtype=np.float64, na_value=np.nan))
    return tuple(out)


def featurize_rows(tasks, measurements) -> np.ndarray:
    """Features of every measurement row (tasks and measurements as in the snapshot).

    A task's ``l1_bytes``/``l2_bytes``, where the snapshot records them, are the caches its footprint is
    compared with: the machine that measured it, not the one featurising.
    """
    import pandas as pd

    info = tasks.set_index("task_id")
    kernels = measurements["task_id"].map(info["kernel"]).to_numpy()
    caches = _row_caches(info, measurements["task_id"])
    shapes = measurements["task_id"].map(info["shape"])
    out = np.zeros((len(measurements), N_FEATURES), dtype=np.float32)
    for kernel in np.unique(kernels):
        rows = np.flatnonzero(kernels == kernel)
        shape_frame = pd.DataFrame([json.loads(s) for s in shapes.iloc[rows]])
        knob_frame = pd.DataFrame([json.loads(s) for s in measurements["schedule"].iloc[rows]])
        out[rows] = featurize_family(kernel, {d: shape_frame[d].to_numpy() for d in FAMILIES[kernel].dims},
                                     {k: knob_frame[k].to_numpy() for k in knob_frame.columns},
                                     None if caches is None else (caches[0][rows], caches[1][rows]))
    return out


def log_flops_rows(tasks, measurements) -> np.ndarray:
    per_task = {row.task_id: log_flops(row.kernel, json.loads(row.shape)) for row in tasks.itertuples()}
    return measurements["task_id"].map(per_task).to_numpy(dtype=np.float64)


def log_flops(kernel: str, shape: dict) -> float:
    family = FAMILIES[kernel]
    return float(np.log(extent_of(family.flops, family.env(shape))))
