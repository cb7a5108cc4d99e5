"""Great Expectations suites generated from a primitive's schema.

Every rule of a table in TELEMETRY.md becomes one expectation, so a failed
validation reads back as "table, column, problem, count of rows". Cross-column
and cross-table rules become a derived boolean column that must be all True.

The drift check compares a snapshot's workload shape with the last accepted
snapshot's (``workload_shape``): each table's row count, and the columns that
declare a drift watch in the schema (``Column.drift``).
"""

from __future__ import annotations

import math

from ._schema import ROW_COUNT_DRIFT_FACTOR, Table

RULE_PREFIX = "__rule__"
DRIFT_PREFIX = "__drift__"


def category_shares(values) -> dict[str, float]:
    """Each category's share of the non-null values, keyed by its text (the reference is stored as JSON)."""
    shares = values.dropna().astype(str).value_counts(normalize=True)
    return {str(category): float(share) for category, share in shares.items()}


def workload_shape(table: Table, frame) -> dict:
    """What the next snapshot of this table is compared with: its row count and its watched columns."""
    columns = {}
    for col in table.columns:
        if col.name not in frame:
            continue
        if col.drift == "mean":
            columns[col.name] = {"mean": float(frame[col.name].mean())}
        elif col.drift == "distribution":
            columns[col.name] = {"shares": category_shares(frame[col.name])}
    return {"row_count": len(frame), "columns": columns}


def _watched(table: Table, reference: dict | None, kind: str, key: str):
    """(column, its reference) for the columns watched as ``kind`` that the reference knows.

    A reference written before a column declared its watch (or by an older
    version, which stored other statistics) has no entry of that kind: the
    column is then not compared, rather than compared with the wrong thing.
    """
    known = (reference or {}).get("columns") or {}
    for col in table.columns:
        if col.drift == kind and isinstance(known.get(col.name), dict) and key in known[col.name]:
            yield col, known[col.name][key]


def distribution_drift_columns(table: Table, frame, reference: dict | None) -> dict[str, tuple]:
    """Derived columns for the distribution watches: ``{column: (weights, largest change)}``.

    GX has no total-variation expectation, so each row gets the weight
    min(1, reference share / observed share) of its category: the mean of the
    weights is the overlap sum(min(observed, reference)) = 1 - total-variation
    distance, an ordinary column-mean expectation that Data Docs show.
    """
    out = {}
    for col, reference_shares in _watched(table, reference, "distribution", "shares"):
        if col.name not in frame:
            continue
        values = frame[col.name]
        observed = category_shares(values)
        if not observed:
            continue  # every value is null: the null rules speak for it
        weight = {c: min(1.0, reference_shares.get(c, 0.0) / share) for c, share in observed.items()}
        weights = values.astype(str).map(weight).where(values.notna()).astype(float)
        out[col.name] = (weights, _largest_share_change(reference_shares, observed))
    return out


def _largest_share_change(reference: dict, observed: dict) -> str:
    category = max(set(reference) | set(observed), key=lambda c: abs(observed.get(c, 0.0) - reference.get(c, 0.0)))
    return f"largest change: {category} {reference.get(category, 0.0):.0%} -> {observed.get(category, 0.0):.0%}"


def expectations_for(table: Table, drift_reference: dict | None, drift_threshold: float, present_columns) -> list:
    """The expectations of one table; columns missing or mistyped are skipped (reported before GX runs).

    ``drift_reference`` is the table's ``workload_shape`` in the last accepted
    snapshot (None: nothing to compare with); the distribution watches need
    their derived columns (``distribution_drift_columns``) among ``present_columns``.
    """
    import great_expectations.expectations as gxe

    out = [gxe.ExpectTableRowCountToBeBetween(min_value=table.min_rows)]
    for col in table.columns:
        if col.name not in present_columns:
            continue
        if not col.nullable:
            out.append(gxe.ExpectColumnValuesToNotBeNull(column=col.name))
        if col.min is not None or col.max is not None:
            out.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=col.name, min_value=col.min, max_value=col.max, strict_min=col.strict_min
                )
            )
        if col.unique:
            out.append(gxe.ExpectColumnValuesToBeUnique(column=col.name))
        if col.non_empty:
            out.append(gxe.ExpectColumnValueLengthsToBeBetween(column=col.name, min_value=1))
        if col.values is not None:
            out.append(gxe.ExpectColumnValuesToBeInSet(column=col.name, value_set=list(col.values)))
    out.extend(_drift_expectations(table, drift_reference, drift_threshold, present_columns))
    for rule in table.rules:
        out.append(gxe.ExpectColumnValuesToBeInSet(column=RULE_PREFIX + rule.name, value_set=[True]))
    return out


def _drift_expectations(table: Table, reference: dict | None, threshold: float, present_columns) -> list:
    import great_expectations.expectations as gxe

    out = []
    rows = (reference or {}).get("row_count")
    if rows:
        out.append(gxe.ExpectTableRowCountToBeBetween(
            min_value=math.ceil(rows / ROW_COUNT_DRIFT_FACTOR), max_value=math.floor(rows * ROW_COUNT_DRIFT_FACTOR),
            meta={"drift": "row_count", "reference": rows}))
    for col, mean in _watched(table, reference, "mean", "mean"):
        if col.name in present_columns:
            band = abs(mean) * threshold
            out.append(gxe.ExpectColumnMeanToBeBetween(column=col.name, min_value=mean - band, max_value=mean + band,
                                                       meta={"drift": "mean"}))
    for col, _ in _watched(table, reference, "distribution", "shares"):
        if DRIFT_PREFIX + col.name in present_columns:
            out.append(gxe.ExpectColumnMeanToBeBetween(column=DRIFT_PREFIX + col.name, min_value=1.0 - threshold,
                                                       meta={"drift": "distribution", "threshold": threshold}))
    return out


def describe_failure(table: Table, result, examples: dict | None = None) -> str:
    """One readable line for a failed expectation result.

    ``examples`` adds a detail to a line: the first offending row of a rule
    (by rule name), the largest change of a distribution watch (by its derived column).
    """
    cfg = result.expectation_config
    kwargs = cfg.kwargs
    column = kwargs.get("column")
    res = result.result or {}
    count = res.get("unexpected_count")
    rows = f"{count} rows" if count is not None else "values"
    kind = cfg.type
    drift = (cfg.meta or {}).get("drift")
    named = column[len(DRIFT_PREFIX):] if column and column.startswith(DRIFT_PREFIX) else column
    where = f"table {table.name}" + (f", column {named}" if named and not named.startswith(RULE_PREFIX) else "")
    if result.exception_info and result.exception_info.get("raised_exception"):
        return f"{where}: could not be checked ({result.exception_info.get('exception_message')})"
    if drift == "row_count":
        return (f"{where}: drift: {res.get('observed_value')} rows against {cfg.meta['reference']} in the last "
                f"accepted snapshot (more than {ROW_COUNT_DRIFT_FACTOR:g}x apart)")
    if drift == "distribution":
        detail = (examples or {}).get(column)
        return (f"{where}: drift: category shares moved by {1.0 - res.get('observed_value'):.2f} from the last accepted "
                f"snapshot (total-variation distance, at most {cfg.meta['threshold']:g})" + (f"; {detail}" if detail else ""))
    if kind == "expect_table_row_count_to_be_between":
        return f"{where}: {res.get('observed_value')} rows, at least {kwargs.get('min_value')} required"
    if kind == "expect_column_values_to_not_be_null":
        return f"{where}: {rows} are null (NaN or missing)"
    if kind == "expect_column_values_to_be_between":
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        bound = " and ".join(
            b for b in ((f"{'>' if kwargs.get('strict_min') else '>='} {lo:g}" if lo is not None else ""), (f"<= {hi:g}" if hi is not None else "")) if b
        )
        return f"{where}: {rows} out of range (must be {bound})"
    if kind == "expect_column_values_to_be_unique":
        return f"{where}: {rows} are duplicates (must be unique)"
    if kind == "expect_column_value_lengths_to_be_between":
        return f"{where}: {rows} are empty strings"
    if kind == "expect_column_values_to_be_in_set" and column.startswith(RULE_PREFIX):
        rule = next(r for r in table.rules if RULE_PREFIX + r.name == column)
        example = (examples or {}).get(rule.name)
        return f"table {table.name}: {rows} break the rule: {rule.description}" + (f" (first: {example})" if example else "")
    if kind == "expect_column_values_to_be_in_set":
        return f"{where}: {rows} not in {kwargs.get('value_set')}"
    if drift == "mean":
        observed = res.get("observed_value")
        return (
            f"{where}: drift: mean {observed if observed is None else format(observed, '.4g')} outside "
            f"[{kwargs.get('min_value'):.4g}, {kwargs.get('max_value'):.4g}] of the last accepted snapshot"
        )
    return f"{where}: {kind} failed"
