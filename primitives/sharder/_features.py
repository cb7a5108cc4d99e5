"""Item features, shared by training (torch) and the runtime (numpy).

An item is described by what any row has, seen in training or not: its
table, its ``attr_*`` values (each column a vocabulary of the values seen in
training; an unseen or missing value is the zero vector) and its size. Rows
seen in the training trace also get a co-access embedding: a neighbour
embedding (FastRP-like) of the co-access graph, in which rows that
transactions touch together end up close.

Placement keys: rows that share a placement key share their hash draws, so
they land, and move, together. The key is the value of the one attribute
column that best explains co-access in training (``key_column``: TPC-C's
warehouse), else the row's own id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._hashing import hash_text, item_keys, splitmix64, value_hashes
from ._schema import attribute_columns


def column_salt(column: str) -> np.uint64:
    return hash_text("column:" + column)


@dataclass
class FeatureSpec:
    """The vocabularies of the feature map, fixed at training time."""

    tables: list[str]
    columns: list[str]
    vocab: dict[str, np.ndarray] = field(default_factory=dict)  # column -> sorted uint64 value hashes
    size_mean: float = 0.0
    size_std: float = 1.0

    @classmethod
    def fit(cls, items: pd.DataFrame) -> "FeatureSpec":
        columns = attribute_columns(items)
        vocab = {}
        for column in columns:
            hashes, present = value_hashes(items[column], column_salt(column))
            vocab[column] = np.unique(hashes[present])
        size = np.log1p(items["size_bytes"].to_numpy(dtype=np.float64))
        return cls(sorted(items["table"].astype(str).unique()), columns, vocab,
                   float(size.mean()) if len(size) else 0.0, float(size.std()) if len(size) > 1 and size.std() > 0 else 1.0)

    @property
    def vocab_sizes(self) -> list[int]:
        return [len(self.vocab[c]) for c in self.columns]

    def encode(self, items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(table index (n,), attribute index (n, C), size feature (n,)); the last index of each vocabulary
        (its size) stands for unseen or missing: a zero vector."""
        n = len(items)
        table = pd.Index(self.tables).get_indexer(items["table"].astype(str).to_numpy(dtype=object))
        table = np.where(table < 0, len(self.tables), table)
        attrs = np.empty((n, len(self.columns)), dtype=np.int64)
        for j, column in enumerate(self.columns):
            vocab = self.vocab[column]
            if column not in items.columns:
                attrs[:, j] = len(vocab)
                continue
            hashes, present = value_hashes(items[column], column_salt(column))
            position = np.searchsorted(vocab, hashes)
            hit = present & (position < len(vocab))
            hit[hit] = vocab[position[hit]] == hashes[hit]
            attrs[:, j] = np.where(hit, position, len(vocab))
        size_bytes = pd.to_numeric(items["size_bytes"]).to_numpy(dtype=np.float64, na_value=0.0)
        size = (np.log1p(size_bytes) - self.size_mean) / self.size_std
        return table.astype(np.int64), attrs, size.astype(np.float32)

    def to_meta(self) -> dict:
        return {"tables": self.tables, "columns": self.columns, "size_mean": self.size_mean, "size_std": self.size_std}

    @classmethod
    def from_saved(cls, meta: dict, arrays: dict) -> "FeatureSpec":
        vocab = {c: np.asarray(arrays[f"vocab_{j}"], dtype=np.uint64) for j, c in enumerate(meta["columns"])}
        return cls(list(meta["tables"]), list(meta["columns"]), vocab, float(meta["size_mean"]), float(meta["size_std"]))


def placement_keys(items: pd.DataFrame, key_column: str | None) -> np.ndarray:
    """uint64 placement key of every row: its key attribute's value where it has one, else its id."""
    if not (key_column and key_column in items.columns):
        return item_keys(items["item_id"].to_numpy(dtype=object))
    hashes, present = value_hashes(items[key_column], column_salt(key_column))
    keys = np.empty(len(items), dtype=np.uint64)
    keys[present] = splitmix64(hashes[present] ^ np.uint64(0x4B4559))  # "KEY": apart from item-id keys
    if not present.all():  # only rows without a key value pay for hashing their id
        keys[~present] = item_keys(items["item_id"].to_numpy(dtype=object)[~present])
    return keys


def coaccess_embedding(n_rows: int, txn: np.ndarray, row: np.ndarray, dim: int, steps: int, seed: int) -> np.ndarray:
    """(n_rows, dim) spectral embedding of the co-access graph: the leading non-trivial eigenvectors of
    its normalised adjacency (each transaction of m rows joins them pairwise with weight 1/(m-1)),
    by randomised subspace iteration (``steps`` rounds), each row scaled to length sqrt(dim). Rows of
    one dense region of the graph (a warehouse, a community) point the same way; rows no transaction
    touches stay 0."""
    from scipy import sparse

    if dim <= 0 or n_rows == 0 or len(row) == 0:
        return np.zeros((n_rows, max(dim, 0)), dtype=np.float32)
    txn_codes, txn_index = np.unique(txn, return_inverse=True)
    per_txn = np.bincount(txn_index, minlength=len(txn_codes)).astype(np.float64)
    weight = 1.0 / np.maximum(per_txn - 1.0, 1.0)
    incidence = sparse.csr_matrix((np.sqrt(weight[txn_index]), (txn_index, row)), shape=(len(txn_codes), n_rows))
    self_loops = np.asarray(incidence.multiply(incidence).sum(axis=0)).ravel()
    degree = np.asarray(incidence.T @ np.asarray(incidence.sum(axis=1)).ravel()).ravel() - self_loops
    touched = degree > 1e-12
    # Regularised degrees (Qin & Rohe, 2013): without them, every small island of rows that only touch
    # each other is an eigenvector of eigenvalue 1 and crowds out the structure that spans the trace.
    regulariser = 0.5 * degree[touched].mean() if touched.any() else 0.0
    scale = np.where(touched, 1.0 / np.sqrt(np.maximum(degree + regulariser, 1e-12)), 0.0)

    # The products over the trace are most of the time, bound by memory: single precision halves what they
    # read and is about 3x faster. The basis is kept orthonormal in double precision.
    incidence32 = incidence.astype(np.float32)

    def adjacency(x):  # D^-1/2 (B^T W B - self loops) D^-1/2 x
        y = scale[:, None] * x
        product = incidence32.T @ (incidence32 @ y.astype(np.float32))
        return scale[:, None] * (product - self_loops[:, None] * y)

    def orthonormal(x):  # through the Gram matrix: a BLAS-3 product, much cheaper than Householder QR here
        values, vectors = np.linalg.eigh(np.ascontiguousarray(x.T) @ x)  # (a transposed view hits a slow BLAS path)
        return x @ (vectors / np.sqrt(np.maximum(values, 1e-12)))

    rng = np.random.default_rng(seed)
    width = dim + 1 + max(8, dim // 2)  # the leading eigenvector, the wanted ones, oversampling
    basis = orthonormal(rng.standard_normal((n_rows, width)))
    for _ in range(max(steps, 1)):
        basis = orthonormal(adjacency(basis))
    values, vectors = np.linalg.eigh(basis.T @ adjacency(basis))
    order = np.argsort(-values)
    embedding = basis @ vectors[:, order[1: dim + 1]]
    norms = np.linalg.norm(embedding, axis=1, keepdims=True)
    embedding = np.where(norms > 1e-12, embedding / np.maximum(norms, 1e-12), 0.0) * np.sqrt(dim)
    embedding[~touched] = 0.0
    return embedding.astype(np.float32)


def key_column_scores(items: pd.DataFrame, txn: np.ndarray, row: np.ndarray) -> dict[str, float]:
    """How well each attribute column explains co-access: of the pairs of rows that one transaction touches,
    the share whose rows both have the column and agree on its value."""
    out = {}
    counts = np.bincount(txn)
    total_pairs = float((counts * (counts - 1) / 2).sum())
    if total_pairs == 0:
        return {c: 0.0 for c in attribute_columns(items)}
    for column in attribute_columns(items):
        hashes, present = value_hashes(items[column], column_salt(column))
        keep = present[row]
        if not keep.any():
            out[column] = 0.0
            continue
        _, value = np.unique(hashes[row[keep]], return_inverse=True)
        same = np.unique(txn[keep] * (int(value.max()) + 1) + value, return_counts=True)[1].astype(np.float64)
        out[column] = float((same * (same - 1) / 2).sum() / total_pairs)
    return out
