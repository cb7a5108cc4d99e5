"""Live evaluation: measure held-out queries under every arm, then score the learned choice and the peers.

Protocol: per query and arm, one warm-up run then the median of ``repeats``
timed runs (3 by default), one query at a time. Arm 0 runs first; the other
arms are cancelled past ``timeout_factor`` x the native latency and count at
that limit (a lower bound on their real latency, so a chooser that picks a
runaway arm is charged at least that much). A warm-up that times out skips
the repeats.

The peers are the classical choices, scored on the same measurements:
``native`` (arm 0 always), ``best_single_arm`` (the one arm with the lowest
total on these queries: an optimistic peer, picked with hindsight) and
``oracle`` (the fastest arm per query).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ._common import arm_limit_ms, progress as _progress
from ._engines import Arm, Engine, QueryError

# Measurements of (database, sql, arm settings, protocol) in this process: re-scoring the
# champion right after the challenger reuses the very same timings, so the two are judged on equal noise.
_MEASURED: dict[tuple, tuple[float, bool]] = {}


def timed_run(engine: Engine, connection, sql: str, arm: Arm, limit_ms: float) -> float:
    """One timed run in ms; a run cancelled at ``limit_ms`` counts at that limit (a lower bound on its real latency)."""
    ran = engine.run(connection, sql, arm, limit_ms)
    return limit_ms if ran.timed_out else ran.latency_ms


def measure(engine: Engine, connection, uri: str, sql: str, arm: Arm, limit_ms: float, repeats: int, warmup: int) -> tuple[float, bool]:
    """(median latency ms, timed out); a timed-out arm counts at its limit."""
    key = (uri, sql, arm.settings, repeats, warmup)
    if key in _MEASURED:
        return _MEASURED[key]
    result = None
    for _ in range(warmup):
        if engine.run(connection, sql, arm, limit_ms).timed_out:
            result = (limit_ms, True)
    if result is None:
        times = [timed_run(engine, connection, sql, arm, limit_ms) for _ in range(repeats)]
        result = (float(np.median(times)), any(t >= limit_ms for t in times))
    _MEASURED[key] = result
    return result


def measure_workload(engine: Engine, connection, uri: str, queries: pd.DataFrame, arms: list[Arm], cfg: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Latency matrix (queries x arms), its timed-out mask, and the ids of queries that could not run natively."""
    repeats, warmup = int(cfg.get("repeats", 3)), int(cfg.get("warmup", 1))
    cap = float(cfg.get("timeout_ms", 3000.0))
    latency = np.full((len(queries), len(arms)), np.nan)
    timed_out = np.zeros_like(latency, dtype=bool)
    failed = []
    started = time.perf_counter()
    for i, q in enumerate(queries.itertuples()):
        try:
            latency[i, 0], timed_out[i, 0] = measure(engine, connection, uri, q.sql, arms[0], cap, repeats, warmup)
        except QueryError as error:
            _progress(f"query {q.query_id}: {error}")
            failed.append(q.query_id)
            continue
        limit = arm_limit_ms(latency[i, 0], cfg)
        for j, arm in enumerate(arms[1:], 1):
            try:
                latency[i, j], timed_out[i, j] = measure(engine, connection, uri, q.sql, arm, limit, repeats, warmup)
            except QueryError as error:
                _progress(f"query {q.query_id}, arm {arm.arm}: {error}")
        if (i + 1) % 10 == 0 or i + 1 == len(queries):
            _progress(f"measured {i + 1}/{len(queries)} queries x {len(arms)} arms in {time.perf_counter() - started:.1f}s")
    return latency, timed_out, failed


# The promotion guardrail: no held-out query more than this many times slower than native (configs/query.yaml
# evaluate.max_query_regression overrides it).
MAX_QUERY_REGRESSION = 1.5


def confirm_regressions(engine: Engine, connection, queries: pd.DataFrame, arms: list[Arm], latency: np.ndarray,
                        timed_out: np.ndarray, choices: list[np.ndarray], cfg: dict) -> list[dict]:
    """Re-measure the cells where a chosen arm looks past the worst-query guardrail, interleaved with native.

    One slow sample of a few-millisecond query (another process woke up) is enough to put a single query past
    ``max_query_regression``, and that guardrail refuses a whole version. Each such (query, chosen arm) and the
    query's native plan run ``confirm_repeats`` more times, alternately, so drift hits both alike; the medians
    replace both cells of ``latency`` (in place), for every chooser scored from it. A real regression stays.
    Returns what was re-measured: query, arm, ratio before and after.
    """
    threshold = float(cfg.get("max_query_regression", MAX_QUERY_REGRESSION))
    repeats = int(cfg.get("confirm_repeats", 5))
    if repeats < 1:
        return []
    column = {a.arm: j for j, a in enumerate(arms)}
    suspects = sorted({(i, column[int(arm)]) for chosen in choices for i, arm in enumerate(chosen)
                       if column.get(int(arm), 0) and not timed_out[i, column[int(arm)]]
                       and latency[i, column[int(arm)]] > threshold * latency[i, 0]})
    cap = float(cfg.get("timeout_ms", 3000.0))
    confirmed = []
    for i, j in suspects:
        sql = queries["sql"].iloc[i]
        limit = arm_limit_ms(latency[i, 0], cfg)
        native, chosen = [], []
        for _ in range(repeats):
            native.append(timed_run(engine, connection, sql, arms[0], cap))
            chosen.append(timed_run(engine, connection, sql, arms[j], limit))
        before = latency[i, j] / latency[i, 0]
        latency[i, 0], latency[i, j] = float(np.median(native)), float(np.median(chosen))
        timed_out[i, j] = timed_out[i, j] or any(t >= limit for t in chosen)
        confirmed.append({"query_id": queries["query_id"].iloc[i], "arm": arms[j].arm, "ratio_before": float(before),
                          "ratio_after": float(latency[i, j] / latency[i, 0])})
    if confirmed:
        _progress(f"re-measured {len(confirmed)} (query, arm) past {threshold}x native, interleaved x{repeats}: "
                  f"{sum(c['ratio_after'] > threshold for c in confirmed)} still past it")
    return confirmed


def chooser_metrics(chosen: np.ndarray, native: np.ndarray, best: np.ndarray) -> dict:
    """TELEMETRY.md's latency metrics of per-query latencies ``chosen`` against ``native`` and the oracle ``best``."""
    out = {
        "total_latency_ratio": float(chosen.sum() / native.sum()),
        "p95_latency_ratio": float(np.percentile(chosen, 95) / np.percentile(native, 95)),
        "p99_latency_ratio": float(np.percentile(chosen, 99) / np.percentile(native, 99)),
        "worst_query_ratio": float(np.max(chosen / native)),
        "total_latency_ms": float(chosen.sum()),
    }
    gap = native.sum() - best.sum()
    if gap > 1e-9:
        out["oracle_gap_closed"] = float((native.sum() - chosen.sum()) / gap)
    return out


def score(latency: np.ndarray, choices: dict[str, np.ndarray], arm_ids: list[int]) -> dict[str, dict]:
    """Metrics of each chooser (name -> arm id per query) on a measured latency matrix."""
    native, best = latency[:, 0], np.nanmin(latency, axis=1)
    column = {a: j for j, a in enumerate(arm_ids)}
    out = {}
    for name, arms in choices.items():
        picked = latency[np.arange(len(latency)), [column[a] for a in arms]]
        picked = np.where(np.isnan(picked), native, picked)  # an arm that could not run falls back to native
        out[name] = chooser_metrics(picked, native, best)
    return out

