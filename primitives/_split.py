"""Deterministic held-out splits that survive reordering and appended rows."""

from __future__ import annotations

import hashlib


def stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text``."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32
