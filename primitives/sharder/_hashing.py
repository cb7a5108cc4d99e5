"""Stable hashing and the hashed Gumbel-max that places rows on shards.

Every (placement key, shard) pair gets a uniform draw U fixed by a hash of
the two. A row goes to ``argmax_s logit[s] - log(-log U[s])``: the Gumbel-max
trick, so it lands on shard s with probability softmax(logit)[s], and since
the draw of a pair never changes, removing a shard moves only its rows and
adding one moves only the rows it wins. Rows that share a placement key (the
rows of one warehouse) share their draws, so they move together.

The hashes are fixed functions of the bytes of an identifier (pandas'
SipHash, then SplitMix64: ``primitives._hashing``), never Python's per-process ``hash``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._hashing import siphash_strings, splitmix64, unit_interval32

_HASH_KEY = "aiprim-shard-v01"  # 16 bytes: pandas' siphash key; changing it reshuffles every placement
_SHARD_SALT = np.uint64(0x5348415244)  # "SHARD"
_CHUNK = 1 << 16  # rows per block: bounds memory at chunk x shards x 8 bytes


def hash_strings(values) -> np.ndarray:
    """uint64 hash of each string (vectorised, stable across processes)."""
    return siphash_strings(values, _HASH_KEY)


def hash_text(text: str) -> np.uint64:
    return hash_strings([text])[0]


def shard_hashes(shard_ids) -> np.ndarray:
    return splitmix64(np.asarray(shard_ids, dtype=np.int64).astype(np.uint64) ^ _SHARD_SALT)


def value_hashes(values, salt: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """(hash, present) of the values of one attribute column; a number hashes by its value as a float64,
    so 5, 5.0 and an Int64 5 are one value (MLflow hands nullable integers over as floats)."""
    series = pd.Series(values)
    present = series.notna().to_numpy()
    out = np.zeros(len(series), dtype=np.uint64)
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        numbers = series.to_numpy(dtype=np.float64, na_value=np.nan)
        numbers = np.where(numbers == 0.0, 0.0, numbers)  # -0.0 and 0.0 are one value
        out[present] = splitmix64(numbers[present].view(np.uint64) ^ salt)
    elif present.any():
        out[present] = splitmix64(hash_strings(series[present].astype(str).to_numpy(dtype=object)) ^ salt)
    return out, present


def gumbel_argmax(keys: np.ndarray, shard_hash: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Index of the winning shard for every key: argmax_s logits[n, s] + Gumbel(hash(key, shard s)).

    ``logits`` is (n, S) or (1, S) (broadcast); float32 throughout, in blocks.
    """
    n = len(keys)
    choice = np.empty(n, dtype=np.int64)
    mixed = splitmix64(shard_hash)[None, :]
    logits = np.asarray(logits, dtype=np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        h = splitmix64(keys[start:stop, None] ^ mixed)
        u = unit_interval32(h)
        np.log(u, out=u)
        np.negative(u, out=u)
        np.log(u, out=u)  # u is now -Gumbel
        block = logits if logits.shape[0] == 1 else logits[start:stop]
        np.subtract(block, u, out=u)
        choice[start:stop] = u.argmax(axis=1)
    return choice


_ITEM_SALT = np.uint64(0x4954454D)  # "ITEM": a row placed by its own id


def item_keys(item_ids) -> np.ndarray:
    """The placement key of a row placed on its own: a hash of its id."""
    return splitmix64(hash_strings(item_ids) ^ _ITEM_SALT)
