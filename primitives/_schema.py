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
    drift: bool = False  # watched by the drift check

    def __post_init__(self):
        if self.dtype not in ARROW_TYPES:
            raise ValueError(f"column {self.name}: unknown type {self.dtype!r}")


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
