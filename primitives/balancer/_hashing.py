"""Stable 64-bit hashing for consistent routing (``primitives._hashing``, under the balancer's own key)."""

from __future__ import annotations

import numpy as np

from .._hashing import siphash_strings, splitmix64, unit_interval32

__all__ = ["hash_strings", "pair_hash", "splitmix64", "unit_interval32"]

_HASH_KEY = "aiprim-route-v01"  # 16 bytes: pandas' siphash key; changing it reshuffles every fleet


def hash_strings(values) -> np.ndarray:
    """uint64 hash of each string (vectorised, stable across processes)."""
    return siphash_strings(values, _HASH_KEY)


def pair_hash(unit_hash: np.ndarray, server_hash: np.ndarray) -> np.ndarray:
    """Hash of every (unit, server) pair: shape (len(unit_hash), len(server_hash))."""
    return splitmix64(unit_hash[:, None] ^ splitmix64(server_hash)[None, :])
