"""The learned balancer's runtime: what a production router calls per batch.

Per batch it scores each (request class, server) pair once with the trained
kernel, in numpy (a few hundred pairs: microseconds), then places every
routing unit with the hashed Gumbel-max of ``_routing``. Row C of the class
table is the kernel for a request class never seen in training; an unseen
server class gets the kernel's "unknown class" slot. Only numpy, pandas and
(at load) torch are imported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._base import Runtime
from ._fleet import Fleet, Units
from ._kernel import mlp_forward, server_features
from ._routing import route_requests, route_units

WEIGHTS_FILE = "balancer_kernel.pt"


class BalancerRuntime(Runtime):
    name = "learned"

    def __init__(self, state: dict):
        self.state = state
        self.request_classes = pd.Index(list(state["request_classes"]), dtype=object)
        self.server_classes = pd.Index(list(state["server_classes"]), dtype=object)
        as_np = lambda t: np.asarray(t, dtype=np.float32)  # noqa: E731
        self.class_features = as_np(state["class_features"])
        self.log_cap_reference = as_np(state["log_cap_reference"])
        self.weights = [as_np(w) for w in state["weights"]]
        self.biases = [as_np(b) for b in state["biases"]]

    @classmethod
    def load(cls, directory: Path) -> "BalancerRuntime":
        import torch

        return cls(torch.load(Path(directory) / WEIGHTS_FILE, weights_only=True, map_location="cpu"))

    def save(self, directory: Path) -> None:
        import torch

        torch.save(self.state, Path(directory) / WEIGHTS_FILE)

    def fleet_logits(self, fleet: Fleet) -> np.ndarray:
        """(C+1, S) logits of every request class (and the unseen-class row) on every server."""
        class_index = self.server_classes.get_indexer(fleet.server_class)
        srv = server_features(fleet.capacity, class_index, len(self.server_classes), self.log_cap_reference)
        cls_ = self.class_features
        pairs = np.concatenate(
            [np.broadcast_to(cls_[:, None, :], (len(cls_), len(srv), cls_.shape[1])),
             np.broadcast_to(srv[None, :, :], (len(cls_), len(srv), srv.shape[1]))], axis=-1)
        mlp = mlp_forward(pairs.reshape(-1, pairs.shape[-1]), self.weights, self.biases).reshape(len(cls_), len(srv))
        return cls_[:, :3] @ np.log(fleet.capacity).T.astype(np.float32) + mlp

    def profile_index(self, units: Units) -> np.ndarray:
        index = self.request_classes.get_indexer(units.request_class)
        return np.where(index < 0, len(self.request_classes), index)

    def route(self, requests: pd.DataFrame, servers: pd.DataFrame) -> np.ndarray:
        """Server id for every request (object array, request order)."""
        units, fleet = Units.from_frame(requests), Fleet.from_frame(servers)
        return route_requests(units, fleet, self.route_units(units, fleet))

    def route_units(self, units: Units, fleet: Fleet) -> np.ndarray:
        """Server index per routing unit (for callers that reuse one batch's units)."""
        return route_units(units, fleet, self.profile_index(units), self.fleet_logits(fleet))

    def predict_frame(self, frame: pd.DataFrame, context: dict) -> pd.Series:
        return pd.Series(self.route(frame, context["servers"]), name="server_id")

    def expected_peak_to_mean(self, requests: pd.DataFrame, servers: pd.DataFrame) -> float:
        """peak_to_mean of the routing *policy* (the softmax, before hashing): the kernel's quality without hash noise.

        Replicas of anti-affinity groups are counted as if routed independently.
        """
        units, fleet = Units.from_frame(requests), Fleet.from_frame(servers)
        logits = self.fleet_logits(fleet)[self.profile_index(units)]
        requirement, names = pd.factorize(pd.Series(units.requires_class, dtype=object))
        for code, name in enumerate(names):
            logits[requirement == code] += np.where(fleet.eligible(name), 0.0, -np.inf)[None, :].astype(np.float32)
        # Units sharing a row of logits share a softmax: aggregate their demand first.
        rows, inverse = np.unique(logits, axis=0, return_inverse=True)
        demand = np.stack([np.bincount(inverse.ravel(), weights=units.demand[:, d], minlength=len(rows)) for d in range(3)], 1)
        prob = np.exp(rows - rows.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        load = prob.T @ demand
        ideal = units.demand.sum(0) / fleet.capacity.sum(0)
        return float((load / fleet.capacity / ideal).max())
