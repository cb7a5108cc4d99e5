"""The learned balancer's runtime: what a production router calls per batch.

Per batch it scores each (request class, server) pair once with the trained
kernel, in numpy (a few hundred pairs: microseconds), then places every
routing unit with the hashed Gumbel-max of ``_routing``. Row C of the class
table is the kernel for a request class never seen in training; an unseen
server class gets the kernel's "unknown class" slot. Only numpy and pandas
are imported; the kernel persists as npz + JSON.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd

from .._base import Runtime, load_weights, mlp_forward, save_weights
from ._fleet import Fleet, Units
from ._kernel import server_features
from ._lp import SplitWeights
from ._routing import route_requests, route_units

SPLIT_MIN_KNOWN_SHARE = 0.5  # of the fleet's capacity, on server types the split was fitted on
WEIGHTS = "balancer_kernel.npz"
META = "balancer_kernel.json"


class BalancerRuntime(Runtime):
    name = "learned"

    def __init__(self, state: dict):
        self.request_classes = pd.Index(list(state["request_classes"]), dtype=object)
        self.server_classes = pd.Index(list(state["server_classes"]), dtype=object)
        as_np = lambda t: np.asarray(t, dtype=np.float32)  # noqa: E731
        self.class_features = as_np(state["class_features"])
        self.log_cap_reference = as_np(state["log_cap_reference"])
        self.weights = [as_np(w) for w in state["weights"]]
        self.biases = [as_np(b) for b in state["biases"]]
        # The hot-unit table (see _hot.py): unit hash -> server id.
        self.hot_units = pd.Index(np.asarray(state.get("hot_units", np.zeros(0, np.uint64)), dtype=np.uint64))
        self.hot_servers = np.asarray(list(state.get("hot_servers", [])), dtype=object)
        self.split: SplitWeights | None = None  # the split LP's weights (see attach_split)
        self._split_rows = np.zeros(0, dtype=np.int64)
        if "split_density" in state:
            self.attach_split(SplitWeights.from_state(state, state))

    @classmethod
    def load(cls, directory: Path) -> "BalancerRuntime":
        arrays, meta = load_weights(directory, WEIGHTS, META)
        layers = int(meta["layers"])
        split = {k: v for k, v in arrays.items() if k.startswith("split_")}
        return cls({**meta, **split, "class_features": arrays["class_features"],
                    "log_cap_reference": arrays["log_cap_reference"],
                    "weights": [arrays[f"weight_{i}"] for i in range(layers)],
                    "biases": [arrays[f"bias_{i}"] for i in range(layers)],
                    "hot_units": arrays["hot_units"]})

    def save(self, directory: Path) -> None:
        arrays = {"class_features": self.class_features, "log_cap_reference": self.log_cap_reference,
                  "hot_units": self.hot_units.to_numpy(dtype=np.uint64)}
        arrays.update({f"weight_{i}": w for i, w in enumerate(self.weights)})
        arrays.update({f"bias_{i}": b for i, b in enumerate(self.biases)})
        meta = {"request_classes": list(self.request_classes), "server_classes": list(self.server_classes),
                "hot_servers": [str(s) for s in self.hot_servers], "layers": len(self.weights)}
        if self.split is not None:
            split_arrays, split_meta = self.split.to_state()
            arrays.update(split_arrays)
            meta.update(split_meta)
        save_weights(directory, arrays, meta, WEIGHTS, META)

    def attach_split(self, split: SplitWeights) -> None:
        """Route the request classes ``split`` covers by its weights; the kernel keeps the others (and the
        unseen-class row).

        The split is the LP's optimum for the expected load of the telemetry it was fitted on, which the
        kernel, a function of a class's and a server's features, only approximates: on 12 deployments of the
        family, the kernel's own policy with the same hot-unit table came out 1.10x the LP-weighted peer's
        peak (geometric mean), the split's 0.96x (benchmarks/RESULTS.md). A fleet with less than
        ``SPLIT_MIN_KNOWN_SHARE`` of its capacity on server types the split knows is routed by the kernel."""
        self.split = split
        self._split_rows = split.class_rows(self.request_classes)

    def fleet_logits(self, fleet: Fleet) -> np.ndarray:
        """(C+1, S) logits of every request class (and the unseen-class row) on every server."""
        return self._fleet_logits(fleet, self._split_types(fleet))

    def _split_types(self, fleet: Fleet) -> np.ndarray | None:
        """The split's type of each server of ``fleet`` where the split routes it (``fitted_to``), else None."""
        if self.split is None:
            return None
        server_type = self.split.server_types(fleet)
        return server_type if self.split.known_share(fleet, server_type) >= SPLIT_MIN_KNOWN_SHARE else None

    def _fleet_logits(self, fleet: Fleet, split_types: np.ndarray | None) -> np.ndarray:
        class_index = self.server_classes.get_indexer(fleet.server_class)
        srv = server_features(fleet.capacity, class_index, len(self.server_classes), self.log_cap_reference)
        cls_ = self.class_features
        pairs = np.concatenate(
            [np.broadcast_to(cls_[:, None, :], (len(cls_), len(srv), cls_.shape[1])),
             np.broadcast_to(srv[None, :, :], (len(cls_), len(srv), srv.shape[1]))], axis=-1)
        mlp = mlp_forward(pairs.reshape(-1, pairs.shape[-1]), self.weights, self.biases).reshape(len(cls_), len(srv))
        logits = cls_[:, :3] @ np.log(fleet.capacity).T.astype(np.float32) + mlp
        # On a fleet mostly of servers the split never saw (a model carried to another deployment), the
        # kernel, which reads any server's features, routes every class.
        if split_types is not None:
            covered = np.flatnonzero(self._split_rows >= 0)
            logits[covered] = self.split.logits(fleet, split_types)[self._split_rows[covered]]
        return logits

    def fitted_to(self, fleet: Fleet) -> bool:
        """Whether ``fleet`` is (mostly) the fleet the export fitted the split and packed the hot-unit table for:
        at least ``SPLIT_MIN_KNOWN_SHARE`` of its capacity on server types the split knows. Elsewhere both stand
        aside: a table pins keys to server names, which on another deployment name other servers. Without a
        split there is nothing to check against, and the table applies wherever its servers are."""
        return self._fitted(self._split_types(fleet))

    def _fitted(self, split_types: np.ndarray | None) -> bool:
        return self.split is None or split_types is not None

    def profile_index(self, units: Units) -> np.ndarray:
        index = self.request_classes.get_indexer(units.request_class)
        return np.where(index < 0, len(self.request_classes), index)

    def route(self, requests: pd.DataFrame, servers: pd.DataFrame) -> np.ndarray:
        """Server id for every request (object array, request order)."""
        units, fleet = Units.from_frame(requests), Fleet.from_frame(servers)
        return route_requests(units, fleet, self.route_units(units, fleet))

    def route_units(self, units: Units, fleet: Fleet) -> np.ndarray:
        """Server index per routing unit (for callers that reuse one batch's units)."""
        split_types = self._split_types(fleet)  # one lookup of the fleet's server types per batch
        choice = route_units(units, fleet, self.profile_index(units), self._fleet_logits(fleet, split_types))
        if len(self.hot_units) and self._fitted(split_types):
            self._apply_hot_table(units, fleet, choice)
        return choice

    def _apply_hot_table(self, units: Units, fleet: Fleet, choice: np.ndarray) -> None:
        entry = self.hot_units.get_indexer(units.unit_hash)
        pinned = np.flatnonzero(entry >= 0)
        if not len(pinned):
            return
        server = pd.Index(fleet.server_id, dtype=object).get_indexer(self.hot_servers[entry[pinned]])
        present = server >= 0  # a pinned server that left the fleet: the unit hashes as usual
        pinned, server = pinned[present], server[present]
        required = units.requires_class[pinned]
        allowed = pd.isna(required) | (required == fleet.server_class[server])
        choice[pinned[allowed]] = server[allowed]

    def renamed_servers(self, suffix: str) -> "BalancerRuntime":
        """A copy that routes a fleet whose server ids all end in ``suffix`` as this one routes the fleet without
        it: the hot-unit table's servers renamed along (what an evaluation's hash draws need)."""
        renamed = copy.copy(self)
        renamed.hot_servers = np.asarray([f"{s}{suffix}" for s in self.hot_servers], dtype=object)
        return renamed

    def attach_hot_table(self, unit_hashes, server_ids) -> None:
        hashes = np.asarray(unit_hashes, dtype=np.uint64)
        self.hot_units = pd.Index(hashes)
        self.hot_servers = np.asarray(list(server_ids), dtype=object)

    def predict_frame(self, frame: pd.DataFrame, context: dict) -> pd.Series:
        return pd.Series(self.route(frame, context["servers"]), name="server_id")

    def expected_peak_to_mean(self, requests: pd.DataFrame, servers: pd.DataFrame) -> float:
        """peak_to_mean of the routing *policy* before hashing: the softmax's expected load for
        hashed units plus the pinned units where the table puts them (replicas counted as hashed)."""
        from ._hot import expected_load
        from ._metrics import load_peak_to_mean

        units, fleet = Units.from_frame(requests), Fleet.from_frame(servers)
        split_types = self._split_types(fleet)
        choice = np.full(len(units), -1, dtype=np.int64)
        if len(self.hot_units) and self._fitted(split_types):
            self._apply_hot_table(units, fleet, choice)
        pinned = choice >= 0
        load = expected_load(self._fleet_logits(fleet, split_types), self.profile_index(units), units, fleet, ~pinned)
        for d in range(load.shape[1]):
            load[:, d] += np.bincount(choice[pinned], weights=units.demand[pinned, d], minlength=len(fleet))
        return load_peak_to_mean(load, fleet.capacity)
