"""Plans as engine-agnostic trees: what the value model sees.

Each node becomes a vector of its operator kind (one-hot over kinds every
engine has: scans, the three join algorithms, aggregation, sorting, ...),
its estimated output rows, its estimated cost where the engine gives one,
and its depth; and, on every node, how the whole plan compares with the
native plan of the same query (log ratio of the root costs and of the summed
estimated rows). The engine's own cost model is a strong hint: an arm whose
plan the engine prices far above its own choice is rarely faster, and a
close call is where a learned correction pays. Trees are binarised (Bao's tree convolution slides over a
node and its two children) and packed into flat arrays:

``features`` (nodes x F), ``left`` and ``right`` child indices (0 = no
child: row 0 is an all-zero padding node), and ``starts`` (first node of each
tree; a tree's nodes are contiguous, root first).
"""

from __future__ import annotations

import json
import math

import numpy as np

KINDS = ("seq_scan", "index_scan", "hash_join", "merge_join", "nested_loop", "hash_build", "aggregate", "sort",
         "filter", "materialize", "projection", "other")
_KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
N_FEATURES = len(KINDS) + 6  # + log rows, log cost, has cost, relative depth, cost and rows against the native plan


def kind_of(operator: str) -> str:
    """Map an engine's operator name (DuckDB ``HASH_JOIN``, PostgreSQL ``Hash Join``) to a shared kind."""
    op = operator.upper().replace(" ", "_")
    if "NESTED_LOOP" in op or op in ("BLOCKWISE_NL_JOIN", "CROSS_PRODUCT", "NL_JOIN"):
        return "nested_loop"
    if "MERGE" in op and "JOIN" in op or op in ("PIECEWISE_MERGE_JOIN", "IE_JOIN"):
        return "merge_join"
    if "JOIN" in op:
        return "hash_join"
    if "INDEX" in op or "BITMAP" in op:
        return "index_scan"
    if "SCAN" in op:
        return "seq_scan"
    if op == "HASH":
        return "hash_build"
    if "AGGREGATE" in op or "GROUP" in op or op in ("UNIQUE", "WINDOWAGG", "WINDOW"):
        return "aggregate"
    if "SORT" in op or "ORDER" in op or "TOP_N" in op or op == "INCREMENTAL_SORT":
        return "sort"
    if "FILTER" in op:
        return "filter"
    if op in ("MATERIALIZE", "MEMOIZE", "CTE", "CTE_SCAN"):
        return "materialize"
    if "PROJECTION" in op or op == "RESULT":
        return "projection"
    return "other"


def _number(value) -> float | None:
    try:
        number = float(str(value).replace(",", "").replace("~", "").strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


# PostgreSQL (before 18) prices an operator it was told not to use at +1e10 per use and keeps it
# when it has no alternative: that penalty is a flag, not a cost, so it is taken out of the cost.
_DISABLE_COST = 1.0e10


def _nodes_postgres(node: dict) -> tuple[str, float | None, float | None, list]:
    cost = _number(node.get("Total Cost"))
    if cost is not None and cost >= _DISABLE_COST:
        cost = cost % _DISABLE_COST
    return node.get("Node Type", "other"), _number(node.get("Plan Rows")), cost, node.get("Plans", [])


def _nodes_duckdb(node: dict) -> tuple[str, float | None, float | None, list]:
    info = node.get("extra_info") or {}
    rows = _number(info.get("Estimated Cardinality")) if isinstance(info, dict) else None
    return node.get("name", "other"), rows, None, node.get("children", [])


def walk(plan) -> tuple[list[tuple], list[int], list[int]]:
    """One plan (JSON text or parsed) -> its binarised nodes ``(kind, est_rows, cost, depth)`` in
    pre-order, with left and right child indices (root = 0, no child = -1)."""
    doc = json.loads(plan) if isinstance(plan, str) else plan
    if isinstance(doc, list):
        doc = doc[0] if doc else {}
    if "Plan" in doc:  # PostgreSQL: [{"Plan": {...}}]
        root, unpack = doc["Plan"], _nodes_postgres
    else:
        root, unpack = doc, _nodes_duckdb
    nodes, left, right = [], [], []

    def visit(node, depth) -> int:
        name, est_rows, cost, children = unpack(node)
        index = len(nodes)
        nodes.append((kind_of(str(name)), est_rows, cost, depth))
        left.append(-1)
        right.append(-1)
        children = [c for c in children if isinstance(c, dict)]
        if children:
            left[index] = visit(children[0], depth + 1)
        if len(children) == 2:
            right[index] = visit(children[1], depth + 1)
        elif len(children) > 2:  # fold extra children into a chain of "other" nodes
            right[index] = visit_chain(children[1:], depth + 1)
        return index

    def visit_chain(children, depth) -> int:
        index = len(nodes)
        nodes.append(("other", None, None, depth))
        left.append(visit(children[0], depth + 1))
        right.append(-1)
        if len(children) > 1:
            right[index] = visit_chain(children[1:], depth + 1)
        return index

    visit(root, 0)
    return nodes, left, right


Totals = tuple[float | None, float]


def totals(walked) -> Totals:
    """(log root cost or None, log summed estimated rows) of a walked plan: its size as the engine sees it."""
    nodes = walked[0]
    cost = nodes[0][2]
    return (math.log1p(cost) if cost is not None else None), math.log1p(sum(n[1] or 0.0 for n in nodes))


def plan_totals(plan) -> Totals:
    return totals(walk(plan))


def featurize(walked, native: Totals | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A walked plan -> (features, left, right); ``native`` is ``totals`` of the same query's native plan
    (without it the comparison features are 0)."""
    nodes, left, right = walked
    max_depth = max(n[3] for n in nodes) or 1
    features = np.zeros((len(nodes), N_FEATURES), dtype=np.float32)
    base = len(KINDS)
    for i, (kind, est_rows, cost, depth) in enumerate(nodes):
        features[i, _KIND_INDEX[kind]] = 1.0
        features[i, base] = math.log1p(est_rows or 0.0) / 10.0
        if cost is not None:
            features[i, base + 1] = math.log1p(cost) / 10.0
            features[i, base + 2] = 1.0
        features[i, base + 3] = depth / max_depth
    if native is not None:
        own_cost, own_rows = totals(walked)
        if own_cost is not None and native[0] is not None:
            features[:, base + 4] = (own_cost - native[0]) / 5.0
        features[:, base + 5] = (own_rows - native[1]) / 5.0
    return features, np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)


def parse_plan(plan, native: Totals | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One plan -> (features, left, right) with local indices (root = 0, no child = -1)."""
    return featurize(walk(plan), native)


def parse_plans(plans, native_index: int | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The plans of one query, each walked once and compared with ``plans[native_index]`` (the native plan)."""
    walked = [walk(p) for p in plans]
    reference = totals(walked[native_index]) if native_index is not None else None
    return [featurize(w, reference) for w in walked]


def pack(parsed: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Parsed trees -> flat arrays with a zero padding node at row 0 (see the module doc)."""
    sizes = np.array([len(f) for f, _, _ in parsed], dtype=np.int64)
    starts = 1 + np.concatenate([[0], np.cumsum(sizes)[:-1]]) if len(parsed) else np.zeros(0, dtype=np.int64)
    features = np.concatenate([np.zeros((1, N_FEATURES), np.float32)] + [f for f, _, _ in parsed]) if parsed else np.zeros((1, N_FEATURES), np.float32)
    left = np.zeros(len(features), dtype=np.int64)
    right = np.zeros(len(features), dtype=np.int64)
    for start, (_, l, r) in zip(starts, parsed):
        n = len(l)
        left[start:start + n] = np.where(l >= 0, l + start, 0)
        right[start:start + n] = np.where(r >= 0, r + start, 0)
    return {"features": features, "left": left, "right": right, "starts": starts.astype(np.int64)}


def plan_summary(plan) -> dict:
    """Operator counts of a plan, for reports and debugging."""
    kinds = [n[0] for n in walk(plan)[0]]
    return {k: kinds.count(k) for k in KINDS if k in kinds}
