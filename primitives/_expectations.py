"""Great Expectations suites generated from a primitive's schema.

Every rule of a table in TELEMETRY.md becomes one expectation, so a failed
validation reads back as "table, column, problem, count of rows". Cross-column
and cross-table rules become a derived boolean column that must be all True.
"""

from __future__ import annotations

from ._schema import Table

RULE_PREFIX = "__rule__"


def expectations_for(table: Table, drift_reference: dict | None, drift_threshold: float, present_columns) -> list:
    """The expectations of one table; columns missing or mistyped are skipped (reported before GX runs)."""
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
        reference = (drift_reference or {}).get(col.name)
        if col.drift and reference:
            for stat, expectation in (("mean", gxe.ExpectColumnMeanToBeBetween), ("median", gxe.ExpectColumnMedianToBeBetween)):
                ref = reference[stat]
                band = abs(ref) * drift_threshold
                out.append(expectation(column=col.name, min_value=ref - band, max_value=ref + band))
    for rule in table.rules:
        out.append(gxe.ExpectColumnValuesToBeInSet(column=RULE_PREFIX + rule.name, value_set=[True]))
    return out


def describe_failure(table: Table, result, examples: dict | None = None) -> str:
    """One readable line for a failed expectation result."""
    cfg = result.expectation_config
    kwargs = cfg.kwargs
    column = kwargs.get("column")
    res = result.result or {}
    count = res.get("unexpected_count")
    rows = f"{count} rows" if count is not None else "values"
    kind = cfg.type
    where = f"table {table.name}" + (f", column {column}" if column and not column.startswith(RULE_PREFIX) else "")
    if result.exception_info and result.exception_info.get("raised_exception"):
        return f"{where}: could not be checked ({result.exception_info.get('exception_message')})"
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
    if kind in ("expect_column_mean_to_be_between", "expect_column_median_to_be_between"):
        stat = "mean" if "mean" in kind else "median"
        return (
            f"{where}: drift: {stat} {res.get('observed_value'):.4g} outside "
            f"[{kwargs.get('min_value'):.4g}, {kwargs.get('max_value'):.4g}] of the last accepted snapshot"
        )
    return f"{where}: {kind} failed"
