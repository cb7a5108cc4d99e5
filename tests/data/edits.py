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


def accept_reference(primitive: str, directory, capsys) -> None:
    """Validate a snapshot so that it becomes the drift reference of the next one."""
    from aiprim.flows.cli import main

    assert main(["validate", primitive, str(directory)]) == 0, capsys.readouterr().err
    capsys.readouterr()
