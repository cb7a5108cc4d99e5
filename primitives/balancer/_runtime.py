"""The learned balancer's runtime: what a production router calls per batch.

It holds a small table computed once from the trained kernel at export: for
request class c and server class k, ``a[c, k]`` weighs the log capacities of
a server and ``b[c, k]`` is a bias. A unit of class c scores server s with
``a[c, k(s)] . log cap(s) + b[c, k(s)]`` and is placed by the hashed
Gumbel-max of ``_routing``. Row C and column V are the generic kernel for a
request or server class never seen in training. Only numpy, pandas and (at load) torch are imported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._base import Runtime
from ._fleet import Fleet, Units
from ._routing import route_requests, route_units

WEIGHTS_FILE = "balancer_kernel.pt"


class BalancerRuntime(Runtime):
    name = "learned"

    def __init__(self, request_classes, server_classes, capacity_weights, class_bias):
        self.request_classes = pd.Index(list(request_classes), dtype=object)
        self.server_classes = pd.Index(list(server_classes), dtype=object)
        self.capacity_weights = np.asarray(capacity_weights, dtype=np.float32)  # (C+1, V+1, 3)
        self.class_bias = np.asarray(class_bias, dtype=np.float32)  # (C+1, V+1)

    @classmethod
    def load(cls, directory: Path) -> "BalancerRuntime":
        import torch

        state = torch.load(Path(directory) / WEIGHTS_FILE, weights_only=True, map_location="cpu")
        return cls(state["request_classes"], state["server_classes"], state["capacity_weights"].numpy(), state["class_bias"].numpy())

    def save(self, directory: Path) -> None:
        import torch

        state = {
            "request_classes": list(self.request_classes),
            "server_classes": list(self.server_classes),
            "capacity_weights": torch.from_numpy(self.capacity_weights),
            "class_bias": torch.from_numpy(self.class_bias),
        }
        torch.save(state, Path(directory) / WEIGHTS_FILE)

    def fleet_logits(self, fleet: Fleet) -> np.ndarray:
        """(C+1, S) logits of every request class on every server of the fleet."""
        server_class = self.server_classes.get_indexer(fleet.server_class)
        server_class[server_class < 0] = len(self.server_classes)
        log_cap = np.log(fleet.capacity).astype(np.float32)
        weights = self.capacity_weights[:, server_class, :]  # (C+1, S, 3)
        return np.einsum("csd,sd->cs", weights, log_cap) + self.class_bias[:, server_class]

    def profile_index(self, units: Units) -> np.ndarray:
        index = self.request_classes.get_indexer(units.request_class)
        return np.where(index < 0, len(self.request_classes), index)

    def route(self, requests: pd.DataFrame, servers: pd.DataFrame) -> np.ndarray:
        """Server id for every request (object array, request order)."""
        units, fleet = Units.from_frame(requests), Fleet.from_frame(servers)
        choice = route_units(units, fleet, self.profile_index(units), self.fleet_logits(fleet))
        return route_requests(units, fleet, choice)

    def predict_frame(self, frame: pd.DataFrame, context: dict) -> pd.Series:
        return pd.Series(self.route(frame, context["servers"]), name="server_id")
