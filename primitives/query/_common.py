"""Small pieces every part of the query optimizer shares."""

from __future__ import annotations

from aiprim._console import log


def progress(message: str) -> None:
    """One line of the query optimizer's, through aiprim's console (stderr: stdout stays clean for --json)."""
    log(message, "query")


def arm_limit_ms(native_ms: float, cfg: dict) -> float:
    """The time limit of a non-native arm: ``timeout_factor`` x native, within [min_timeout_ms, timeout_ms]."""
    cap = float(cfg.get("timeout_ms", 3000.0))
    limit = native_ms * float(cfg.get("timeout_factor", 4.0))
    return min(max(limit, float(cfg.get("min_timeout_ms", 50.0))), cap)
