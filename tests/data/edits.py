"""Edits of telemetry tables for the data tests: one bad value at a time."""

from __future__ import annotations


def edit(tables: dict, table: str, fn) -> dict:
    """A copy of ``tables`` with ``fn`` applied to a copy of one table."""
    out = {k: v.copy() for k, v in tables.items()}
    out[table] = fn(out[table])
    return out


def set_cell(column: str, row, value):
    """An edit that writes ``value`` at (row, column)."""
    def fn(frame):
        frame.loc[row, column] = value
        return frame

    return fn
