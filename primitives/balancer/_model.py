"""The balancer kernel and its training: a differentiable load objective.

Routing is a softmax over eligible servers realised by a hashed Gumbel-max,
so the *expected* load of every server is a smooth function of the kernel's
logits. Training minimises a soft maximum, over servers and resources, of
expected utilisation relative to the fleet's ideal, plus a multiple of its
standard deviation (the hash realisation puts units on servers at random, and
hot units make that noise matter). Scenarios are the snapshot's own fleet and
demand plus perturbed copies (servers removed, capacities and class mixes
jittered), so the kernel learns to balance fleets it has not seen.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

import lightning as L

from ._fleet import Fleet, RESOURCES, Units

from ._kernel import N_CLASS_FEATURES, class_features, server_features


class BalancerKernel(nn.Module):
    """Scores every (request class, server) pair from their features.

    logit = share(c) . log cap(s)  +  MLP([class features, server features])

    The first term is capacity-weighted rendezvous on the class's own demand
    mix (a good start); the MLP learns the rest. Server features are the
    server's own (log capacities relative to a fixed reference, a one-hot of
    its class with a slot for unseen classes), never its id or anything about
    the rest of the fleet, so adding or removing a server leaves every other
    server's score unchanged: that is what keeps routing consistent.
    """

    def __init__(self, n_server_classes: int, hidden: int = 32, depth: int = 2):
        super().__init__()
        layers, width = [], N_CLASS_FEATURES + len(RESOURCES) + n_server_classes + 1
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        out = nn.Linear(width, 1)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.mlp = nn.Sequential(*layers, out)

    def forward(self, class_feats: torch.Tensor, server_feats: torch.Tensor, log_cap: torch.Tensor) -> torch.Tensor:
        """(C, S) logits."""
        n_c, n_s = len(class_feats), len(server_feats)
        pairs = torch.cat([class_feats[:, None, :].expand(n_c, n_s, -1), server_feats[None, :, :].expand(n_c, n_s, -1)], dim=-1)
        return class_feats[:, :3] @ log_cap.T + self.mlp(pairs).squeeze(-1)


def expected_utilisation(kernel, scenario, spread_weight: float):
    """Per (server, resource): expected utilisation / ideal, and that plus spread_weight x its std."""
    logits = kernel(scenario["features"], scenario["server_features"], torch.log(scenario["capacity"]))
    logits = logits[scenario["group_class"]] + scenario["mask"]
    prob = torch.softmax(logits, dim=1)  # (G, S)
    load = prob.T @ scenario["demand"]  # (S, 3)
    var = (prob * (1 - prob)).T @ scenario["demand_sq"]
    scale = scenario["capacity"] * scenario["ideal"]
    ratio = load / scale
    return ratio, ratio + spread_weight * torch.sqrt(var + 1e-12) / scale


class BalancerModule(L.LightningModule):
    """Thin Lightning wrapper: the loss is the soft peak of expected utilisation."""

    def __init__(self, n_server_classes: int, hidden: int = 32, depth: int = 2, lr: float = 0.02,
                 temperature: float = 0.02, spread_weight: float = 2.5, weight_decay: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.kernel = BalancerKernel(n_server_classes, hidden, depth)

    def _loss(self, scenario):
        ratio, pessimistic = expected_utilisation(self.kernel, scenario, self.hparams.spread_weight)
        t = self.hparams.temperature
        return t * torch.logsumexp(pessimistic.flatten() / t, dim=0), ratio.max(), pessimistic.max()

    def training_step(self, scenario, batch_idx):
        loss, peak, _ = self._loss(scenario)
        self.log("train/loss", loss, batch_size=1)
        self.log("train/expected_peak_to_mean", peak, batch_size=1)
        return loss

    def validation_step(self, scenario, batch_idx):
        loss, peak, pessimistic = self._loss(scenario)
        self.log("val/loss", loss, batch_size=1, prog_bar=True)
        self.log("val/expected_peak_to_mean", peak, batch_size=1)
        self.log("val/pessimistic_peak_to_mean", pessimistic, batch_size=1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class _Scenarios(torch.utils.data.Dataset):
    def __init__(self, make, count: int, seed: int, perturb: bool):
        self.make, self.count, self.seed, self.perturb = make, count, seed, perturb

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        return self.make(np.random.default_rng((self.seed, i)) if self.perturb else None)


class BalancerDataModule(L.LightningDataModule):
    """Routing scenarios built from a snapshot's fleet and (training) requests."""

    def __init__(self, servers: pd.DataFrame, requests: pd.DataFrame, scenarios_per_epoch: int = 64,
                 drop_fraction: float = 0.3, capacity_jitter: float = 0.25, mix_jitter: float = 0.5, unknown_class_rate: float = 0.1, hot_units: int = 0, lp_split: bool = False, seed: int = 0):
        super().__init__()
        self.fleet = Fleet.from_frame(servers)
        units = Units.from_frame(requests)
        self.units, self.hot_units, self.lp_split = units, int(hot_units), bool(lp_split)  # for the export
        self.request_classes = sorted(set(units.request_class))
        self.server_classes = sorted(set(self.fleet.server_class))
        unit_class = pd.Index(self.request_classes).get_indexer(units.request_class)
        requirement = pd.Series(units.requires_class).fillna("").to_numpy(dtype=object)
        groups = pd.DataFrame({"cls": unit_class, "req": requirement})
        group_id, group_keys = pd.factorize(pd.MultiIndex.from_frame(groups))
        n_groups = len(group_keys)
        self.group_class = np.array([k[0] for k in group_keys])
        self.group_requirement = [k[1] or None for k in group_keys]
        self.demand = np.stack([np.bincount(group_id, weights=units.demand[:, d], minlength=n_groups) for d in range(3)], 1)
        self.demand_sq = np.stack([np.bincount(group_id, weights=units.demand[:, d] ** 2, minlength=n_groups) for d in range(3)], 1)
        mean_cost = np.stack([np.bincount(unit_class, weights=units.demand[:, d], minlength=len(self.request_classes)) for d in range(3)], 1)
        mean_cost /= np.bincount(unit_class, weights=units.n_requests, minlength=len(self.request_classes))[:, None]
        self.mean_cost = mean_cost
        self.features = class_features(mean_cost)
        # Fixed for the life of the model: server features must not depend on the fleet.
        self.log_cap_reference = np.log(self.fleet.capacity).mean(axis=0)
        self.settings = dict(count=scenarios_per_epoch, drop=drop_fraction, cap=capacity_jitter, mix=mix_jitter, seed=seed,
                             unknown_class_rate=unknown_class_rate)

    def scenario(self, rng: np.random.Generator | None) -> dict:
        capacity, server_class = self.fleet.capacity.copy(), self.fleet.server_class
        demand, demand_sq = self.demand.copy(), self.demand_sq.copy()
        keep = np.ones(len(self.fleet), dtype=bool)
        if rng is not None:
            s = self.settings
            keep = rng.random(len(self.fleet)) >= rng.uniform(0, s["drop"])
            capacity *= rng.lognormal(0.0, s["cap"], size=capacity.shape)
            scale = rng.lognormal(0.0, s["mix"], size=len(self.request_classes))[self.group_class]
            demand *= scale[:, None]
            demand_sq *= scale[:, None] ** 2
            for req in set(self.group_requirement) - {None}:  # never drop a required class entirely
                members = np.flatnonzero(server_class == req)
                if not keep[members].any():
                    keep[rng.choice(members)] = True
        capacity, server_class = capacity[keep], server_class[keep]
        class_index = pd.Index(self.server_classes).get_indexer(server_class)
        if rng is not None and rng.random() < self.settings.get("unknown_class_rate", 0.1):
            class_index = np.full_like(class_index, -1)  # teach the kernel fleets of unseen classes
        mask = np.zeros((len(self.group_class), keep.sum()), dtype=np.float32)
        for g, req in enumerate(self.group_requirement):
            if req is not None:
                mask[g, server_class != req] = -np.inf
        ideal = demand.sum(0) / capacity.sum(0)
        as_tensor = lambda x, dtype=torch.float32: torch.as_tensor(np.asarray(x), dtype=dtype)  # noqa: E731
        return {
            "features": as_tensor(self.features),
            "capacity": as_tensor(capacity),
            "server_features": as_tensor(server_features(capacity, class_index, len(self.server_classes), self.log_cap_reference)),
            "group_class": as_tensor(self.group_class, torch.long),
            "mask": as_tensor(mask),
            "demand": as_tensor(demand),
            "demand_sq": as_tensor(demand_sq),
            "ideal": as_tensor(ideal),
        }

    def train_dataloader(self):
        s = self.settings
        return torch.utils.data.DataLoader(_Scenarios(self.scenario, s["count"], s["seed"], True), batch_size=None, shuffle=True)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(_Scenarios(self.scenario, 1, 0, False), batch_size=None)


def export_kernel(module: BalancerModule, datamodule: BalancerDataModule) -> dict:
    """Everything the numpy runtime needs: class features (plus a row for unseen classes) and MLP weights."""
    features = np.vstack([datamodule.features, class_features(datamodule.mean_cost.mean(0, keepdims=True))])
    linears = [m for m in module.kernel.mlp if isinstance(m, nn.Linear)]
    return {
        "request_classes": list(datamodule.request_classes),
        "server_classes": list(datamodule.server_classes),
        "class_features": np.asarray(features, dtype=np.float32),
        "log_cap_reference": np.asarray(datamodule.log_cap_reference, dtype=np.float32),
        "weights": [m.weight.detach().cpu().float().numpy().copy() for m in linears],
        "biases": [m.bias.detach().cpu().float().numpy().copy() for m in linears],
    }
