"""Stable 64-bit hashing for consistent routing.

Python's ``hash`` is salted per process, so routing decisions made with it
would move between restarts. These hashes are fixed functions of the bytes of
an identifier, computed in C by pandas, and mixed with SplitMix64 so that the
(unit, server) pairs behave like independent uniform draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_HASH_KEY = "aiprim-route-v01"  # 16 bytes: pandas' siphash key; changing it reshuffles every fleet
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def hash_strings(values) -> np.ndarray:
    """uint64 hash of each string (vectorised, stable across processes)."""
    array = np.asarray(values, dtype=object)
    return pd.util.hash_array(array, hash_key=_HASH_KEY, categorize=False)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, element-wise (in place on a fresh array: this is the routing hot loop)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
        return z


def pair_hash(unit_hash: np.ndarray, server_hash: np.ndarray) -> np.ndarray:
    """Hash of every (unit, server) pair: shape (len(unit_hash), len(server_hash))."""
    return splitmix64(unit_hash[:, None] ^ splitmix64(server_hash)[None, :])


def unit_interval32(h: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to float32 strictly inside (0, 1): 23 bits, so the largest value stays below 1."""
    u = (h >> np.uint64(41)).astype(np.float32)
    u += np.float32(0.5)
    u *= np.float32(1.0 / 8388608.0)
    return u
