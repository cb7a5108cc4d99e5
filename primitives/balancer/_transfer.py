"""Transfer for the balancer: a ready kernel for a new deployment from its descriptor, without training it.

The transfer model is one name-free balancer kernel (request-class cost
features, server log-capacities; no class one-hots, so it reads any fleet)
conditioned on the deployment. An encoder maps the standardised descriptor
(``_descriptor.FIELDS``) to a point ``z`` of a small embedding space; a
decoder (a linear hypernetwork) maps ``z`` to a per-unit scale and shift of
the kernel's first layer. Both fold into the first layer's weights and bias,
so a decoded primitive is a plain ``BalancerRuntime`` (npz + JSON, numpy only
on the hot path). It is trained with Lightning over a population of
deployments, each on its own objective: the soft peak of expected
utilisation of that deployment's fleet and traffic (the loss a balancer
trained from scratch minimises), never by regressing onto stored weights.

Decoding for a deployment: compute its descriptor, encode, fold, compute the
request classes' cost features from its telemetry and pack its hottest units
(``_hot``), as every balancer export does. ``steps`` > 0 fine-tunes the
whole transfer model on the new deployment's scenarios first (few-shot).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._base import load_weights, save_weights

WEIGHTS, META = "transfer_model.npz", "transfer_model.json"


@dataclass(frozen=True)
class TransferParams:
    hidden: int = 32
    depth: int = 2
    embedding: int = 8
    lr: float = 0.01
    epochs: int = 8
    scenarios_per_member: int = 16   # per member and epoch
    temperature: float = 0.02
    spread_weight: float = 2.0
    drop_fraction: float = 0.1
    capacity_jitter: float = 0.05
    mix_jitter: float = 0.1
    hot_units: int = 1000  # as the small profile, which the population members train with
    lp_split: bool = True  # the decoded runtime routes the deployment's request classes by the split LP (_lp)
    finetune_lr: float = 0.003


# --- the deployment family -------------------------------------------------------------------

def draw_deployment(seed: int, servers: tuple[int, int] = (8, 300), requests_per_server: int = 1500,
                    max_requests: int = 400_000) -> dict:
    """Tables of one deployment drawn from the embedded source's family: fleet size (log-uniform in
    ``servers``), class mix, capacity ratios, request mix and cost ratios, key skew, groups and zones vary;
    every server and request class gets a name the generator never uses."""
    import pandas as pd

    from ._fleet import CAPACITY_COLUMNS, COST_COLUMNS
    from ._source import DEFAULTS, REQUEST_CLASSES, SERVER_CLASSES, generate

    rng = np.random.default_rng(seed)
    n_servers = int(round(np.exp(rng.uniform(np.log(servers[0]), np.log(servers[1])))))
    mix = rng.dirichlet(np.full(len(SERVER_CLASSES), 0.8))
    if rng.random() < 0.3:  # some fleets have no gpu servers (and so no inference traffic)
        mix[list(SERVER_CLASSES).index("gpu")] = 0.0
    mix = np.maximum(mix, 0.0)
    # Every class with a positive share gets at least one server, so a required class always has one.
    class_mix = {c: float(m) for c, m in zip(SERVER_CLASSES, mix) if m * n_servers >= 1.0} or {"general": 1.0}
    n_requests = int(min(max_requests, max(20_000, n_servers * requests_per_server)))
    cfg = {
        **DEFAULTS,
        "servers": n_servers,
        "zones": int(rng.integers(1, 5)),
        "class_mix": class_mix,
        "size_choices": sorted(set(np.round(rng.choice([0.5, 1.0, 1.5, 2.0, 4.0], size=2, replace=False), 2).tolist())),
        "capacity_jitter": float(rng.uniform(0.05, 0.3)),
        "requests": n_requests,
        "keys": int(max(2000, n_requests // rng.uniform(3, 10))),
        "zipf_exponent": float(rng.uniform(0.4, 1.1)),
        "zipf_offset": float(np.exp(rng.uniform(np.log(20), np.log(2000)))),
        "tenants": int(rng.integers(3, 20)),
        "tenant_mix_alpha": float(rng.uniform(0.3, 2.0)),
        "inference_share": float(rng.uniform(0.0, 0.12)),
        "affinity_key_share": float(rng.uniform(0.0, 0.1)),
        "anti_affinity_share": float(rng.uniform(0.0, 0.05)),
        "cost_sigma": float(rng.uniform(0.1, 0.5)),
    }
    tables = generate(cfg, int(rng.integers(2**31)))
    servers_frame, requests = tables["servers"].copy(), tables["requests"].copy()
    # Capacity ratios per server class and cost ratios per request class, then names never generated.
    tag = f"{seed:x}"
    server_names = {c: f"s{tag}-{i}" for i, c in enumerate(rng.permutation(list(SERVER_CLASSES)))}
    request_names = {c: f"r{tag}-{i}" for i, c in enumerate(rng.permutation(list(REQUEST_CLASSES)))}
    for cls in SERVER_CLASSES:
        rows = (servers_frame["server_class"] == cls).to_numpy()
        servers_frame.loc[rows, list(CAPACITY_COLUMNS)] *= rng.lognormal(0.0, 0.35, size=3)
    for cls in REQUEST_CLASSES:
        rows = (requests["request_class"] == cls).to_numpy()
        requests.loc[rows, list(COST_COLUMNS)] *= rng.lognormal(0.0, 0.35, size=3)
    servers_frame["server_class"] = servers_frame["server_class"].map(server_names)
    servers_frame["zone"] = servers_frame["zone"].map(lambda z: f"dc{tag}-{z[-1]}")
    servers_frame["server_id"] = [f"n{tag}-{i:04d}" for i in range(len(servers_frame))]
    requests["server_id"] = requests["server_id"].map(dict(zip(tables["servers"]["server_id"], servers_frame["server_id"])))
    requests["request_class"] = requests["request_class"].map(request_names)
    requests["requires_class"] = requests["requires_class"].map(lambda c: server_names.get(c) if isinstance(c, str) else None)
    requests["requires_class"] = requests["requires_class"].astype(object).where(requests["requires_class"].notna(), None)
    return {"servers": servers_frame.reset_index(drop=True), "requests": pd.DataFrame(requests).reset_index(drop=True)}


# --- the model ---------------------------------------------------------------------------------

def _torch_parts():
    import torch
    from torch import nn

    from ._model import BalancerKernel

    class ConditionalKernel(nn.Module):
        """A name-free kernel whose first layer is scaled and shifted by the deployment's embedding."""

        def __init__(self, n_descriptor: int, hidden: int, depth: int, embedding: int):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(n_descriptor, 32), nn.SiLU(), nn.Linear(32, embedding), nn.Tanh())
            self.kernel = BalancerKernel(0, hidden, depth)
            self.scale = nn.Linear(embedding, hidden)
            self.shift = nn.Linear(embedding, hidden, bias=False)
            for layer in (self.scale, self.shift):  # starts as the unconditioned kernel
                nn.init.zeros_(layer.weight)
            nn.init.zeros_(self.scale.bias)

        def first_layer(self, z):
            """The first layer's (weight, bias) for embedding ``z``: the decoder's output."""
            first = self.kernel.mlp[0]
            gain = 1.0 + 0.5 * torch.tanh(self.scale(z))
            return gain[:, None] * first.weight, gain * first.bias + self.shift(z)

        def forward(self, class_feats, server_feats, log_cap, z):
            n_c, n_s = len(class_feats), len(server_feats)
            pairs = torch.cat([class_feats[:, None, :].expand(n_c, n_s, -1), server_feats[None, :, :].expand(n_c, n_s, -1)], -1)
            weight, bias = self.first_layer(z)
            hidden = torch.nn.functional.linear(pairs, weight, bias)
            for layer in list(self.kernel.mlp)[1:]:
                hidden = layer(hidden)
            return class_feats[:, :3] @ log_cap.T + hidden.squeeze(-1)

    return ConditionalKernel


def _name_free(scenario: dict) -> dict:
    """A scenario's server features without class one-hots: log capacity, then the constant 'unseen' slot."""
    import torch

    servers = scenario["server_features"][:, :3]
    return {**scenario, "server_features": torch.cat([servers, torch.ones(len(servers), 1)], dim=1)}


class _Member:
    """One deployment of the population: its scenario builder and its standardised descriptor."""

    def __init__(self, tables: dict, descriptor: np.ndarray, params: TransferParams, seed: int):
        from ._model import BalancerDataModule

        self.datamodule = BalancerDataModule(tables["servers"], tables["requests"], scenarios_per_epoch=1,
                                             drop_fraction=params.drop_fraction, capacity_jitter=params.capacity_jitter,
                                             mix_jitter=params.mix_jitter, unknown_class_rate=0.0, seed=seed)
        self.descriptor = np.asarray(descriptor, dtype=np.float32)


def _lightning_module(model, params: TransferParams, lr: float):
    import lightning as L
    import torch

    from ._model import expected_utilisation

    class TransferModule(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def loss(self, item):
            scenario, descriptor = item
            z = self.model.encoder(descriptor)
            kernel = lambda c, s, cap: self.model(c, s, cap, z)  # noqa: E731
            _, pessimistic = expected_utilisation(kernel, scenario, params.spread_weight)
            t = params.temperature
            return t * torch.logsumexp(pessimistic.flatten() / t, dim=0)

        def training_step(self, item, batch_idx):
            loss = self.loss(item)
            self.log("train/loss", loss, batch_size=1)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=lr)

    return TransferModule()


class _Scenarios:
    def __init__(self, members: list[_Member], standardise, count: int, seed: int):
        self.members, self.standardise, self.count, self.seed = members, standardise, count, seed

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        import torch

        member = self.members[i % len(self.members)]
        scenario = _name_free(member.datamodule.scenario(np.random.default_rng((self.seed, i))))
        return scenario, torch.as_tensor(self.standardise(member.descriptor), dtype=torch.float32)


def _fit(model, members, standardise, params: TransferParams, steps: int, lr: float, seed: int) -> float:
    import lightning as L
    import torch

    from aiprim._console import settle_library_loggers

    settle_library_loggers()  # Lightning installs its own log handler when first imported
    module = _lightning_module(model, params, lr)
    loader = torch.utils.data.DataLoader(_Scenarios(members, standardise, steps, seed), batch_size=None, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0)
    # The tensors are tiny (classes x servers): handing them between threads costs ~10x the work on a
    # busy machine, so one thread, for this fit only.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer.fit(module, loader)
    finally:
        torch.set_num_threads(threads)
    return float(trainer.callback_metrics.get("train/loss", float("nan")))


@dataclass
class TransferState:
    """A fitted transfer model: the conditional kernel's tensors and how descriptors are standardised."""

    tensors: dict
    mean: np.ndarray
    scale: np.ndarray
    params: TransferParams
    members: int
    train_loss: float

    def save(self, directory: Path) -> None:
        arrays = {f"t.{k}": v for k, v in self.tensors.items()}
        arrays.update(descriptor_mean=self.mean, descriptor_scale=self.scale)
        save_weights(directory, arrays, {"params": asdict(self.params), "members": self.members,
                                         "train_loss": self.train_loss}, WEIGHTS, META)

    @classmethod
    def load(cls, directory: Path) -> "TransferState":
        arrays, meta = load_weights(directory, WEIGHTS, META)
        tensors = {k[2:]: v for k, v in arrays.items() if k.startswith("t.")}
        return cls(tensors, arrays["descriptor_mean"], arrays["descriptor_scale"], TransferParams(**meta["params"]),
                   int(meta["members"]), float(meta["train_loss"]))

    def standardise(self, descriptor: np.ndarray) -> np.ndarray:
        # Clipped: a deployment far outside the population is read as its nearest edge, not extrapolated.
        return np.clip((np.asarray(descriptor) - self.mean) / self.scale, -4.0, 4.0).astype(np.float32)

    def model(self):
        import torch

        model = _torch_parts()(len(self.mean), self.params.hidden, self.params.depth, self.params.embedding)
        model.load_state_dict({k: torch.as_tensor(v) for k, v in self.tensors.items()})
        return model

    def embed(self, descriptor: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model().encoder(torch.as_tensor(self.standardise(descriptor))).numpy()


class BalancerTransfer:
    """The balancer's side of the transfer stage (``Primitive.transfer_model``)."""

    params_class = TransferParams
    state_class = TransferState

    def draw_sizes(self, source: dict) -> dict:
        """Family draw sizes for a profile's source: the full family (8 to 300 servers) by default, the
        source's size when smaller."""
        servers = int(source.get("servers", 300))
        requests = int(source.get("requests", 400_000))
        return {"servers": (8, max(8, min(300, servers))), "requests_per_server": max(200, requests // max(servers, 1)),
                "max_requests": min(400_000, requests)}

    def draw_deployment(self, seed: int, servers: tuple[int, int] = (8, 300), requests_per_server: int = 1500,
                        max_requests: int = 400_000) -> dict:
        return draw_deployment(seed, servers, requests_per_server, max_requests)

    def fit(self, population: list[tuple[dict, np.ndarray]], params: TransferParams | None = None, seed: int = 0) -> TransferState:
        """Train over ``[(training tables, descriptor), ...]``, every deployment on its own objective."""
        import lightning as L

        if len(population) < 2:
            raise ValueError(f"the transfer model needs a population of at least 2 deployments, not {len(population)}")
        params = params or TransferParams()
        L.seed_everything(seed, verbose=False)
        members = [_Member(tables, descriptor, params, seed + i) for i, (tables, descriptor) in enumerate(population)]
        stacked = np.stack([m.descriptor for m in members]).astype(np.float64)
        mean, scale = stacked.mean(axis=0), np.maximum(stacked.std(axis=0), 1e-3)
        model = _torch_parts()(len(mean), params.hidden, params.depth, params.embedding)
        standardise = lambda d: np.clip((d - mean) / scale, -4.0, 4.0).astype(np.float32)  # noqa: E731
        steps = params.epochs * params.scenarios_per_member * len(members)
        loss = _fit(model, members, standardise, params, steps, params.lr, seed)
        tensors = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
        return TransferState(tensors, mean, scale, params, len(members), loss)

    def decode(self, state: TransferState, descriptor: np.ndarray, tables: dict, directory: Path, steps: int = 0,
               seed: int = 0, shuffled_from: np.ndarray | None = None):
        """Write the runtime for the deployment of ``tables`` (its training part) to ``directory``; returns it.

        ``steps`` > 0 fine-tunes on this deployment first. ``shuffled_from`` decodes with another
        deployment's descriptor (the leakage control) while reading this deployment's telemetry."""
        import torch

        from ._hot import finish_export
        from ._kernel import class_features
        from ._runtime import BalancerRuntime

        started = time.perf_counter()
        member = _Member(tables, descriptor, state.params, seed)
        model = state.model()
        if steps > 0:
            _fit(model, [member], state.standardise, state.params, steps, state.params.finetune_lr, seed)
        used = descriptor if shuffled_from is None else shuffled_from
        with torch.no_grad():
            z = model.encoder(torch.as_tensor(state.standardise(used)))
            weight, bias = model.first_layer(z)
            linears = [m for m in model.kernel.mlp if isinstance(m, torch.nn.Linear)]
            weights = [weight.numpy().copy()] + [m.weight.numpy().copy() for m in linears[1:]]
            biases = [bias.numpy().copy()] + [m.bias.numpy().copy() for m in linears[1:]]
        dm = member.datamodule
        runtime = BalancerRuntime({
            "request_classes": list(dm.request_classes),
            "server_classes": [],  # name-free: every server reads as the 'unseen class' slot
            "class_features": np.vstack([dm.features, class_features(dm.mean_cost.mean(0, keepdims=True))]),
            "log_cap_reference": dm.log_cap_reference,
            "weights": weights,
            "biases": biases,
        })
        finish_export(runtime, dm.units, dm.fleet, state.params.hot_units, state.params.lp_split)
        Path(directory).mkdir(parents=True, exist_ok=True)
        runtime.save(Path(directory))
        runtime.decode_seconds = time.perf_counter() - started
        return runtime
