"""The query optimizer's tables, as TELEMETRY.md (schema_version 1) defines them."""

from __future__ import annotations

import json

import pandas as pd

from .._schema import Column, Rule, Schema, Table, references, set_unless


def _passes(check, values: pd.Series) -> pd.Series:
    """True where ``check(value)`` does not raise ValueError."""
    def ok(value) -> bool:
        try:
            check(value)
        except ValueError:
            return False
        return True

    return values.map(ok).astype(bool)


def _json_list_of_settings(frames) -> pd.Series:
    from ._engines import parse_settings

    return _passes(parse_settings, frames["arms"]["settings"])


def _read_only_statement(frames) -> pd.Series:
    from ._engines import check_read_only

    return _passes(check_read_only, frames["queries"]["sql"])


def _plan_is_json(frames) -> pd.Series:
    def ok(text) -> bool:
        try:
            return isinstance(json.loads(text), (list, dict))
        except (TypeError, ValueError):
            return False

    return frames["executions"]["plan"].map(ok).astype(bool)


def _arm_zero_is_native(frames) -> pd.Series:
    arms = frames["arms"]
    return (arms["arm"] != 0) | (arms["settings"].map(lambda s: s.strip().replace(" ", "")) == "[]")


QUERIES = Table(
    "queries",
    (
        Column("query_id", "string", unique=True, non_empty=True),
        Column("template", "string", non_empty=True, drift="distribution"),
        Column("sql", "string", non_empty=True),
        # Optional: the template's fingerprint (a hash of the SQL with its literals stripped; computed from sql
        # when absent) and the selectivity probes, JSON [[rows passing the table's constant predicates, table rows], ...].
        Column("fingerprint", "string", nullable=True, required=False),
        Column("probes", "string", nullable=True, required=False),
    ),
    rules=(Rule("sql_is_one_read_only_statement", "sql is exactly one read-only statement (SELECT/WITH)", _read_only_statement),),
)

ARMS = Table(
    "arms",
    (
        Column("arm", "int32", unique=True, min=0),
        Column("name", "string", non_empty=True),
        Column("settings", "string"),
    ),
    required=False,
    rules=(
        Rule("settings_are_a_json_list", 'settings is a JSON list of "name=value" session settings', _json_list_of_settings),
        Rule("arm_zero_has_no_settings", "arm 0 is the engine's own choice: no settings", _arm_zero_is_native),
    ),
)

EXECUTIONS = Table(
    "executions",
    (
        Column("query_id", "string", non_empty=True),
        Column("arm", "int32", min=0),
        Column("plan", "string", non_empty=True),
        # Measured on a machine whose load varies between runs: sanity rules only, no drift watch.
        # The arm mix is not watched either: on-policy rounds run the champion's choices, not every arm.
        Column("latency_ms", "float64", nullable=True, min=0.0),
        Column("timed_out", "bool"),
        Column("rows", "int64", nullable=True, min=0),
        Column("ts", "float64", min=0.0),
        # The limit the run was cancelled at: a timed-out latency is known to be at least this.
        Column("timeout_ms", "float64", nullable=True, min=0.0, strict_min=True, required=False),
    ),
    required=False,
    rules=(
        references("executions", "query_id", "queries", noun="query"),
        references("executions", "arm", "arms"),
        Rule("plan_is_json", "plan is the engine's plan as JSON", _plan_is_json),
        set_unless("executions", "latency_ms", "timed_out", name="latency_unless_timed_out"),
    ),
)

SCHEMA = Schema(version=1, tables=(QUERIES, ARMS, EXECUTIONS))
