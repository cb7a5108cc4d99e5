"""Held-out splits declared as data, deterministic and stable under reordering and appended rows.

A primitive declares its split (``Primitive.holdout``) instead of writing it:

- ``Newest(column)``: the newest fraction of rows by a time column;
- ``Groups(column, salt, stratify=...)``: whole groups (templates, kernel
  shapes) held out, a fixed share of each stratum, chosen by a hash of the
  group's name so adding groups never moves the others;
- ``Hashed(column, salt)``: rows whose hashed key falls under the fraction.

``HoldOut`` applies its rules in order to one table (later rules see only
rows not yet held out), labels each held-out row with the rule that took it,
and filters linked tables by a key column.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np


def stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text``."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


@dataclass(frozen=True)
class Newest:
    column: str
    label: str = "newest"

    def mask(self, frame, fraction: float) -> np.ndarray:
        # ``HoldOut`` has sorted the frame by this column already.
        cut = int(round(len(frame) * (1.0 - fraction)))
        return np.arange(len(frame)) >= cut


@dataclass(frozen=True)
class Hashed:
    column: str
    salt: str
    label: str = "hashed"

    def mask(self, frame, fraction: float) -> np.ndarray:
        return frame[self.column].map(lambda v: stable_fraction(f"{self.salt}|{v}") < fraction).to_numpy(dtype=bool)


@dataclass(frozen=True)
class Groups:
    """Whole groups per stratum: ``round(n * fraction * share)`` of a stratum's n groups, at least one
    where it has three or more, none where it has fewer than ``min_groups``."""

    column: str
    salt: str
    stratify: str | Callable[[object], object] | None = None  # a column of the row, or a function of the group
    share: float = 1.0
    min_groups: int = 0
    label: str = "groups"

    def mask(self, frame, fraction: float) -> np.ndarray:
        groups = frame[self.column]
        if self.stratify is None:
            strata = {g: "" for g in groups.unique()}
        elif callable(self.stratify):
            strata = {g: self.stratify(g) for g in groups.unique()}
        else:
            strata = dict(zip(groups, frame[self.stratify]))
        held = set()
        for stratum in sorted(set(strata.values())):
            own = sorted((g for g, s in strata.items() if s == stratum), key=lambda g: stable_fraction(f"{self.salt}|{g}"))
            count = int(round(len(own) * fraction * self.share))
            if len(own) >= 3:
                count = max(1, count)
            if len(own) < self.min_groups:
                count = 0
            held.update(own[:count])
        return groups.isin(held).to_numpy(dtype=bool)


@dataclass(frozen=True)
class HoldOut:
    table: str
    rules: tuple
    order_by: str | None = None      # sort the table first (time splits)
    key: str | None = None           # column that links other tables to the held-out rows
    linked: tuple[str, ...] = ()     # tables filtered by ``key``; all others go to both sides unchanged
    label_column: str | None = None  # where held-out rows record which rule took them

    def split(self, tables: dict, fraction: float) -> tuple[dict, dict]:
        frame = tables[self.table]
        if self.order_by:
            frame = frame.sort_values(self.order_by, kind="stable")
        held = np.zeros(len(frame), dtype=bool)
        labels = np.empty(len(frame), dtype=object)
        for rule in self.rules:
            taken = rule.mask(frame, fraction) & ~held
            labels[taken] = rule.label
            held |= taken
        held_frame = frame[held]
        if self.label_column:
            held_frame = held_frame.assign(**{self.label_column: labels[held]})
        train = {**tables, self.table: frame[~held].reset_index(drop=True)}
        held_out = {**tables, self.table: held_frame.reset_index(drop=True)}
        for name in self.linked:
            if name in tables:
                linked = tables[name]
                train[name] = linked[linked[self.key].isin(train[self.table][self.key])].reset_index(drop=True)
                held_out[name] = linked[linked[self.key].isin(held_out[self.table][self.key])].reset_index(drop=True)
        return train, held_out
