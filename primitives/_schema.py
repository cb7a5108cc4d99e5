"""Declarative telemetry schemas: the contract of TELEMETRY.md as data.

One description per table drives the Great Expectations suite, the reader and
the documentation, so the rules are written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Arrow type names accepted for each logical type of the contract.
ARROW_TYPES = {
    "string": ("string", "large_string", "string_view"),
    "float64": ("double",),
    "int32": ("int32",),
    "int64": ("int64",),
    "bool": ("bool",),
}
NUMERIC_TYPES = ("float64", "int32", "int64")
# Narrower numeric types that a reader widens to the contract's type without changing a value (Arrow's safe
# cast refuses an integer a double cannot hold exactly): integer costs in a float column, int32 ids in an
# int64 one, as telemetry written by other tools often has them.
WIDENED_FROM = {
    "float64": ("float", "halffloat", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"),
    "int64": ("int8", "int16", "int32", "uint8", "uint16", "uint32"),
    "int32": ("int8", "int16", "uint8", "uint16"),
}

# How a column is watched by the drift check against the last accepted snapshot
# (``Column.drift``). Drift is about the workload's shape, so only columns that
# describe the workload declare a watch:
#   "mean": a numeric column of the workload (costs, demands, capacities, sizes):
#       its mean may move by at most the drift threshold, relative to the reference's;
#   "distribution": a categorical column (request class, template, kernel): the
#       total-variation distance between its category shares and the reference's
#       may be at most the drift threshold.
# Measured outcomes (latencies, runtimes) declare none: they move with the load of
# the machine that measured them, which says nothing about the workload. Their
# sanity rules (nulls, ranges, > 0) still apply to every snapshot.
DRIFT_KINDS = ("mean", "distribution")

# Row counts are part of the shape too, but a snapshot's size is its sender's
# choice: the `small` profile sends 25x fewer balancer requests than the default,
# on-policy query rounds run fewer arms per query than the first one, and users
# export whatever window they have. So a table's row count is drift only when it
# moves by more than this factor either way: a truncated export or a table of
# another system, never a smaller or larger sample of the same workload.
ROW_COUNT_DRIFT_FACTOR = 100.0


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # a key of ARROW_TYPES
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    strict_min: bool = False
    unique: bool = False
    non_empty: bool = False  # strings: at least one character
    values: tuple | None = None  # allowed values
    drift: str | None = None  # one of DRIFT_KINDS, or None: not watched by the drift check
    required: bool = True  # False: a snapshot may leave the column out; where present, its rules apply

    def __post_init__(self):
        if self.dtype not in ARROW_TYPES:
            raise ValueError(f"column {self.name}: unknown type {self.dtype!r}")
        if self.drift is not None and self.drift not in DRIFT_KINDS:
            raise ValueError(f"column {self.name}: unknown drift watch {self.drift!r}, expected one of {DRIFT_KINDS}")
        if self.drift == "mean" and self.dtype not in NUMERIC_TYPES:
            raise ValueError(f"column {self.name}: drift 'mean' needs a numeric column, not {self.dtype}")


@dataclass(frozen=True)
class Rule:
    """A row-level rule across columns: ``check(frame)`` returns a boolean Series, True = row is fine."""

    name: str
    description: str
    check: object  # Callable[[dict[str, DataFrame]], pd.Series]
    # Optional Callable[[dict[str, DataFrame], int], str]: why row ``i`` breaks the rule, naming it.
    explain: object = None


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    required: bool = True
    min_rows: int = 1
    rules: tuple[Rule, ...] = field(default_factory=tuple)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


@dataclass(frozen=True)
class Schema:
    version: int
    tables: tuple[Table, ...]

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)


# --- rules every schema writes the same way ----------------------------------------

def require_columns(frame, what: str, needed, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` in one line naming every column of ``needed`` that ``frame`` lacks."""
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise error(f"{what}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")


def _present(series):
    """Set: not null, and for a boolean flag, true."""
    return series.fillna(False).astype(bool) if series.dtype == bool or str(series.dtype) == "boolean" else series.notna()


def references(table: str, column: str, target: str, target_column: str | None = None, noun: str | None = None,
               name: str | None = None, optional: bool = False, explain=None) -> Rule:
    """A foreign key: ``table.column`` names a row of ``target`` (by ``target_column``); null allowed when ``optional``."""
    target_column = target_column or column
    noun = noun or target_column
    article = "an" if noun[0] in "aeiou" else "a"

    def check(frames):
        values = frames[table][column]
        known = set(frames[target][target_column]) if target in frames else set()
        return values.isin(known) | (values.isna() if optional else False)

    return Rule(name or f"{column}_in_{target}", f"{column} names {article} {noun} of {target}.parquet", check, explain)


def set_exactly_when(table: str, column: str, other: str, name: str | None = None, explain=None) -> Rule:
    """``column`` is set on exactly the rows where ``other`` is set."""

    def check(frames):
        frame = frames[table]
        return _present(frame[column]) == _present(frame[other])

    return Rule(name or f"{column}_iff_{other}", f"{column} is set exactly when {other} is set", check, explain)


def set_unless(table: str, column: str, other: str, name: str | None = None, explain=None) -> Rule:
    """``column`` is set on every row where ``other`` (an error, a timeout flag) is not."""

    def check(frames):
        frame = frames[table]
        return _present(frame[column]) | _present(frame[other])

    return Rule(name or f"{column}_unless_{other}", f"{column} is set unless {other} is", check, explain)
