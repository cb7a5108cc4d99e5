"""Stable 64-bit hashing for the primitives' placement decisions (the balancer's routes, the sharder's shards).

Python's ``hash`` is salted per process, so a decision made with it would move between restarts. These
hashes are fixed functions of the bytes of an identifier, computed in C by pandas (SipHash under a key that
each primitive names), and mixed with SplitMix64 so that (key, target) pairs behave like independent
uniform draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def siphash_strings(values, hash_key: str) -> np.ndarray:
    """uint64 hash of each string (vectorised, stable across processes); ``hash_key`` is 16 bytes, and changing it
    reshuffles every decision made with it."""
    return pd.util.hash_array(np.asarray(values, dtype=object), hash_key=hash_key, categorize=False)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, element-wise, on a fresh array (in place after the first step: a hot loop)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
        return z


def unit_interval32(h: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to float32 strictly inside (0, 1): 23 bits, so no draw is ever 0 or 1."""
    u = (h >> np.uint64(41)).astype(np.float32)
    u += np.float32(0.5)
    u *= np.float32(1.0 / 8388608.0)
    return u
