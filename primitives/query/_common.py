"""Small pieces every part of the query optimizer shares."""

from __future__ import annotations

import sys


def progress(message: str) -> None:
    # Progress goes to stderr so stdout stays clean for --json output.
    print(f"[aiprim query] {message}", file=sys.stderr, flush=True)


def arm_limit_ms(native_ms: float, cfg: dict) -> float:
    """The time limit of a non-native arm: ``timeout_factor`` x native, within [min_timeout_ms, timeout_ms]."""
    cap = float(cfg.get("timeout_ms", 3000.0))
    limit = native_ms * float(cfg.get("timeout_factor", 4.0))
    return min(max(limit, float(cfg.get("min_timeout_ms", 50.0))), cap)
