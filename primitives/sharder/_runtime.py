"""The learned sharder's runtime: where a row lives, in numpy.

Every row has a placement key (its key attribute's value, e.g. its warehouse,
or its own id; see ``_features``) and a distribution q over the shards the
model was trained on: the packed table's for a key seen in training (its
shard with probability 1 - epsilon; a training row that left its key's shard
is pinned to its own the same way), the kernel's from the row's attributes
for anything else. The row goes to the hashed Gumbel-max of

    logit(shard s) = log(k * q(s)) + log(capacity(s) / training capacity(s))   for a training shard,
    logit(shard s) = log(capacity(s) / mean training capacity)                  for a new one,

with the draws fixed by (cluster, shard) for a key seen in training (its
co-access cluster: what the trace touches together) and by (key, shard) for
one never seen. The scores of the training shards average to the capacity
prior, so a new shard wins each cluster with its capacity share (about
1/(k+1)) and takes it whole; a removed shard's rows move, cluster by cluster
to one shard each, and no other rows do. Only numpy and pandas are imported;
the model persists as npz + JSON.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._base import Runtime, load_weights, mlp_forward, save_weights
from .._schema import require_columns
from ._features import FeatureSpec, placement_keys
from ._hashing import gumbel_argmax, item_keys, shard_hashes, splitmix64
from ._trace import PlacementError, Shards

_DRAW_SALT = np.uint64(0x4C4541524E4544)  # "LEARNED"
WEIGHTS = "sharder_model.npz"
META = "sharder_model.json"


class SharderRuntime(Runtime):
    name = "learned"

    def __init__(self, state: dict):
        self.train_shard_ids = np.asarray(state["train_shard_ids"], dtype=np.int64)
        self.train_capacity = np.asarray(state["train_capacity"], dtype=np.float64)
        self.spec: FeatureSpec = state["spec"]
        self.key_column: str | None = state.get("key_column")
        self.replicated = list(state.get("replicated", []))
        self.epsilon = float(state.get("epsilon", 1e-4))
        self.coaccess_dim = int(state["coaccess_dim"])
        self.embeddings = [np.asarray(e, dtype=np.float32) for e in state["embeddings"]]
        self.weights = [np.asarray(w, dtype=np.float32) for w in state["weights"]]
        self.biases = [np.asarray(b, dtype=np.float32) for b in state["biases"]]
        self.prototypes = np.asarray(state["prototypes"], dtype=np.float32)
        self.cluster_bias = np.asarray(state["cluster_bias"], dtype=np.float32)
        self.cluster_shard = np.asarray(state["cluster_shard"], dtype=np.int64)
        self.sharpness = float(state["sharpness"])
        order = np.argsort(np.asarray(state["group_hash"], dtype=np.uint64), kind="stable")
        self.group_hash = np.asarray(state["group_hash"], dtype=np.uint64)[order]
        self.group_shard = np.asarray(state["group_shard"], dtype=np.int64)[order]
        self.group_weight = np.asarray(state["group_weight"], dtype=np.float64)[order]
        self.group_cluster = np.asarray(state["group_cluster"], dtype=np.int64)[order]
        # Training rows that left their group's shard (``_refine.final_placement``), by item key, and the groups
        # they left: only rows of those groups pay for hashing their ids.
        row_hash = np.asarray(state.get("row_hash", ()), dtype=np.uint64)
        order = np.argsort(row_hash, kind="stable")
        self.row_hash, self.row_shard = row_hash[order], np.asarray(state.get("row_shard", ()), dtype=np.int64)[order]
        row_key = np.asarray(state.get("row_key", ()), dtype=np.uint64)
        if len(row_key) == len(row_hash):
            self.row_key = row_key[order]
            self.group_left = np.isin(self.group_hash, self.row_key)
        else:  # a row table saved without its groups' keys: every row of a known group looks itself up
            self.row_key = np.zeros(0, dtype=np.uint64)
            self.group_left = np.ones(len(self.group_hash), dtype=bool)
        # Cluster numbers are small integers in every model: a salt drawn from the model's own table keeps
        # two models' cluster draws apart (each stays fixed for its model).
        self.draw_salt = np.uint64(splitmix64(np.bitwise_xor.reduce(self.group_hash, initial=np.uint64(0)) ^ _DRAW_SALT))
        self.training_report = dict(state.get("training_report") or {})  # how the export chose the packed table

    # --- persistence -------------------------------------------------------------
    @classmethod
    def load(cls, directory: Path) -> "SharderRuntime":
        arrays, meta = load_weights(directory, WEIGHTS, META)
        named = ("train_shard_ids", "train_capacity", "group_hash", "group_shard", "group_weight", "group_cluster",
                 "prototypes", "cluster_bias", "cluster_shard")
        optional = [k for k in ("row_hash", "row_shard", "row_key") if k in arrays]  # models saved before row overrides have none
        return cls({**meta, **{k: arrays[k] for k in (*named, *optional)},
                    "spec": FeatureSpec.from_saved(meta["spec"], arrays),
                    "embeddings": [arrays[f"embedding_{j}"] for j in range(len(meta["spec"]["columns"]))],
                    "weights": [arrays[f"weight_{i}"] for i in range(int(meta["layers"]))],
                    "biases": [arrays[f"bias_{i}"] for i in range(int(meta["layers"]))]})

    def save(self, directory: Path) -> None:
        arrays = {"train_shard_ids": self.train_shard_ids, "train_capacity": self.train_capacity,
                  "group_hash": self.group_hash, "group_shard": self.group_shard.astype(np.int32),
                  "group_weight": self.group_weight.astype(np.float32), "group_cluster": self.group_cluster.astype(np.int32),
                  "prototypes": self.prototypes, "cluster_bias": self.cluster_bias,
                  "cluster_shard": self.cluster_shard, "row_hash": self.row_hash, "row_shard": self.row_shard.astype(np.int32),
                  "row_key": self.row_key}
        arrays.update({f"vocab_{j}": self.spec.vocab[c] for j, c in enumerate(self.spec.columns)})
        arrays.update({f"embedding_{j}": e for j, e in enumerate(self.embeddings)})
        arrays.update({f"weight_{i}": w for i, w in enumerate(self.weights)})
        arrays.update({f"bias_{i}": b for i, b in enumerate(self.biases)})
        meta = {"spec": self.spec.to_meta(), "key_column": self.key_column, "replicated": self.replicated,
                "epsilon": self.epsilon, "coaccess_dim": self.coaccess_dim, "layers": len(self.weights),
                "sharpness": self.sharpness, "training_report": self.training_report}
        save_weights(directory, arrays, meta, WEIGHTS, META)

    # --- placement -----------------------------------------------------------------
    def attribute_closeness(self, items: pd.DataFrame) -> np.ndarray:
        """(n, clusters) closeness of the rows to every prototype, from their attributes, table and size alone."""
        table, attrs, size = self.spec.encode(items)
        # The first layer is linear in one-hot and embedded inputs: gather each one's contribution from a
        # small table instead of building the (n, width) input; co-access and its mask are 0 here.
        first, bias = self.weights[0], self.biases[0]
        width_table = len(self.spec.tables) + 1
        pre = first[:, :width_table].T[table] + bias
        offset = width_table
        for j, embedding in enumerate(self.embeddings):
            block = first[:, offset: offset + embedding.shape[1]]
            pre += (embedding @ block.T)[attrs[:, j]]
            offset += embedding.shape[1]
        pre += size[:, None] * first[:, offset][None, :]
        h = mlp_forward(pre / (1.0 + np.exp(-pre)), self.weights[1:], self.biases[1:]) if len(self.weights) > 1 else pre
        p = self.prototypes
        distance = (h * h).sum(1, keepdims=True) - 2.0 * h @ p.T + (p * p).sum(1)[None, :]
        return self.cluster_bias[None, :] - self.sharpness * distance

    def attribute_scores(self, items: pd.DataFrame, closeness: np.ndarray | None = None) -> np.ndarray:
        """(n, k) log q over the training shards from the rows' attributes, table and size alone."""
        if closeness is None:
            closeness = self.attribute_closeness(items)
        logits = np.full((len(closeness), len(self.train_shard_ids)), -np.inf, dtype=np.float64)
        for shard in np.unique(self.cluster_shard):  # logsumexp over each shard's clusters
            own = closeness[:, self.cluster_shard == shard]
            top = own.max(axis=1, keepdims=True)
            logits[:, shard] = (top + np.log(np.exp(own - top).sum(axis=1, keepdims=True)))[:, 0]
        logits += np.log(self.train_capacity / self.train_capacity.sum())
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def _columns(self, fleet: Shards) -> tuple[np.ndarray, np.ndarray]:
        """(training position of each shard, -1 if new; log capacity adjustment of each shard)."""
        position = pd.Index(self.train_shard_ids).get_indexer(fleet.shard_id)
        known = position >= 0
        adjust = np.log(fleet.capacity / self.train_capacity.mean())
        adjust[known] = np.log(fleet.capacity[known] / self.train_capacity[position[known]])
        return position, adjust

    def _logits(self, log_q: np.ndarray, position: np.ndarray, adjust: np.ndarray) -> np.ndarray:
        """(n, S) placement logits on the given shards from (n, k) log q over the training shards."""
        k = len(self.train_shard_ids)
        out = np.broadcast_to(adjust.astype(np.float32), (len(log_q), len(position))).copy()
        known = np.flatnonzero(position >= 0)
        out[:, known] += np.float32(np.log(k)) + log_q[:, position[known]].astype(np.float32)
        return out

    def pinned_log_q(self) -> np.ndarray:
        """(k, k) log q of a key pinned to each training shard."""
        k = len(self.train_shard_ids)
        if k == 1:
            return np.zeros((1, 1))
        log_q = np.full((k, k), np.log(self.epsilon / (k - 1)))
        np.fill_diagonal(log_q, np.log1p(-self.epsilon))
        return log_q

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Row of the packed table for every key, -1 where the key was not seen in training."""
        return _sorted_lookup(self.group_hash, keys)

    def pinned_shards(self, item_ids: np.ndarray, at: np.ndarray, group_row: np.ndarray) -> np.ndarray:
        """Training shard position of the rows ``item_ids[at]``, whose groups are rows ``group_row`` of the packed
        table (``lookup``): the group's, or the row's own where it left its group."""
        pinned = self.group_shard[group_row]
        check = np.flatnonzero(self.group_left[group_row])
        if len(check):
            own = _sorted_lookup(self.row_hash, item_keys(item_ids[at[check]]))
            pinned[check] = np.where(own >= 0, self.row_shard[own], pinned[check])
        return pinned

    def place_positions(self, items: pd.DataFrame, fleet: Shards) -> np.ndarray:
        """Position in ``fleet`` of every row's shard."""
        if len(items) == 0:
            return np.zeros(0, dtype=np.int64)
        require_columns(items, "items", ("item_id", "table", "size_bytes"), PlacementError)
        keys = placement_keys(items, self.key_column)
        row = self.lookup(keys)
        position, adjust = self._columns(fleet)
        hashes = shard_hashes(fleet.shard_id)
        out = np.empty(len(items), dtype=np.int64)
        found = np.flatnonzero(row >= 0)
        if len(found):
            # A known group draws its hashes by its cluster: what the trace touches together lands, and
            # moves when shards come and go, together. The draws are salted apart from hashing's: the
            # deployment of today hashes the same ids, and a row kept where hashing put it would otherwise
            # carry that choice's draw (the largest of k) and hardly ever move to a new shard.
            pinned = self.pinned_shards(items["item_id"].to_numpy(dtype=object), found, row[found])
            cluster = self.group_cluster[row[found]]
            inverse, pairs = pd.factorize(cluster * len(self.train_shard_ids) + pinned)
            pairs = np.asarray(pairs, dtype=np.int64)
            draws = splitmix64(np.asarray(pairs // len(self.train_shard_ids), dtype=np.uint64) ^ self.draw_salt)
            logits = self._logits(self.pinned_log_q()[pairs % len(self.train_shard_ids)], position, adjust)
            out[found] = gumbel_argmax(draws, hashes, logits)[inverse]
        rest = np.flatnonzero(row < 0)
        if len(rest):  # never seen: scored from attributes, drawn by its own key (new rows of one key go together)
            log_q = self.attribute_scores(items.iloc[rest])
            out[rest] = gumbel_argmax(splitmix64(keys[rest] ^ _DRAW_SALT), hashes, self._logits(log_q, position, adjust))
        return out

    def place(self, items: pd.DataFrame, shards: pd.DataFrame) -> np.ndarray:
        """Shard id of every row (items order)."""
        fleet = Shards.from_frame(shards)
        return fleet.shard_id[self.place_positions(items, fleet)]

    def reshard(self, items: pd.DataFrame, shards: pd.DataFrame, budget: float) -> np.ndarray:
        """A placement that moves at most ``budget`` (a fraction of all bytes) away from ``current_shard``.

        Moves go by placement key, all rows of a key that must move at once (half a warehouse moved
        saves no distributed transaction), best first by the key's training accesses per byte moved;
        a key whose move does not fit the remaining budget is skipped for smaller ones. Rows with no
        current shard, or whose shard is gone, have nothing to stay on: they go where ``place`` puts
        them, outside the budget.
        """
        if not 0.0 <= float(budget) <= 1.0:
            raise PlacementError(f"reshard: budget {budget!r} must be a fraction of the bytes in [0, 1]")
        fleet = Shards.from_frame(shards)
        target = self.place_positions(items, fleet)
        current = fleet.index_of(items["current_shard"]) if "current_shard" in items else np.full(len(items), -1)
        size = pd.to_numeric(items["size_bytes"]).to_numpy(dtype=np.float64)
        out = np.where(current >= 0, current, target)
        wants = np.flatnonzero((current >= 0) & (target != current))
        if not len(wants):
            return fleet.shard_id[out]
        group, unique_keys = pd.factorize(placement_keys(items.iloc[wants], self.key_column))
        moved_bytes = np.bincount(group, weights=size[wants])
        row = self.lookup(np.asarray(unique_keys, dtype=np.uint64))
        weight = np.where(row >= 0, self.group_weight[np.maximum(row, 0)], 0.0)
        gain = (weight + 1e-12) / np.maximum(moved_bytes, 1.0)
        remaining = float(budget) * size.sum()
        chosen = np.zeros(len(moved_bytes), dtype=bool)
        for g in np.argsort(-gain, kind="stable"):
            if moved_bytes[g] <= remaining:
                chosen[g] = True
                remaining -= moved_bytes[g]
        move = wants[chosen[group]]
        out[move] = target[move]
        return fleet.shard_id[out]

    def predict_frame(self, frame: pd.DataFrame, context: dict) -> pd.Series:
        return pd.Series(self.place(frame, context["shards"]), name="shard_id")


def _sorted_lookup(table: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of every key in the sorted ``table``, -1 where it is not there."""
    if not len(table):
        return np.full(len(keys), -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(table, keys), len(table) - 1)
    return np.where(table[at] == keys, at, -1)
