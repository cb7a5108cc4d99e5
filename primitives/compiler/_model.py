"""The learned cost model: an MLP over TenSet-style features, trained to rank and to predict.

The plain ``CostModelNet`` predicts log(runtime / flops), standardised, so
one scale fits every shape. ``CostModule`` (thin Lightning wrapper) trains it
on two losses: squared error on that target (a timed-out schedule is a
censored sample: only predictions below its limit are penalised), and a
pairwise logistic ranking loss over pairs of schedules of one task whose
runtimes differ by more than ``rank_margin`` (log), so the order inside a
task, which is what a tuner needs, is learned directly. Batches hold whole
tasks; validation holds out whole tasks.

The runtime blends the members' mean with gradient-boosted trees fitted on the
same standardised rows (``fit_tree_member``, weight ``tree_weight``): the two
err on different shapes, and their blend ranks unseen shapes more reliably
than either alone (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn

from ._features import N_FEATURES, featurize_rows, log_flops_rows, view_columns


class CostModelNet(nn.Module):
    """``members`` independent MLPs; ``forward`` gives each member's prediction (members x rows).

    Averaging members trained from different initialisations cuts the variance that decides a
    ranking on a handful of held-out shapes; the spread is there for whoever wants it. Member j
    reads the feature columns ``columns[j]`` (a view of the features; all of them by default).
    """

    def __init__(self, n_features: int = N_FEATURES, hidden: int = 256, depth: int = 3, dropout: float = 0.0,
                 members: int = 1, columns: list[list[int]] | None = None):
        super().__init__()
        self.columns = [list(c) for c in columns] if columns is not None else [list(range(n_features))] * members
        if len(self.columns) != members:
            raise ValueError(f"{members} members but {len(self.columns)} column views")
        for j, cols in enumerate(self.columns):
            self.register_buffer(f"columns_{j}", torch.as_tensor(cols, dtype=torch.long), persistent=False)
        self.members = nn.ModuleList()
        for cols in self.columns:
            layers, width = [], len(cols)
            for _ in range(depth):
                layers += [nn.Linear(width, hidden), nn.SiLU()] + ([nn.Dropout(dropout)] if dropout else [])
                width = hidden
            layers.append(nn.Linear(width, 1))
            self.members.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x.index_select(1, getattr(self, f"columns_{j}"))).squeeze(-1)
                            for j, member in enumerate(self.members)])


def member_columns(views: str, members: int) -> list[list[int]]:
    """The feature columns of each member: member j reads view ``j mod len(views)`` of the comma-separated ``views``."""
    names = [v.strip() for v in views.split(",") if v.strip()] or ["all"]
    return [view_columns(names[j % len(names)]) for j in range(members)]


def training_rows(tasks, measurements):
    """Features, targets (log seconds per flop), censoring flags and task codes of the usable rows."""
    measured = measurements["runtime_s"].notna().to_numpy()
    timed_out = (~measured) & measurements["error"].fillna("").str.startswith("timed out").to_numpy()
    if "time_limit_s" in measurements:
        timed_out &= measurements["time_limit_s"].notna().to_numpy()
    else:
        timed_out[:] = False
    keep = measured | timed_out
    rows = measurements[keep].reset_index(drop=True)
    seconds = np.where(measured[keep], rows["runtime_s"].to_numpy(dtype=float, na_value=np.nan),
                       rows["time_limit_s"].to_numpy(dtype=float, na_value=np.nan) if "time_limit_s" in rows else np.nan)
    x = featurize_rows(tasks, rows)
    y = np.log(seconds) - log_flops_rows(tasks, rows)
    codes = rows["task_id"].astype("category").cat.codes.to_numpy()
    return x, y.astype(np.float32), timed_out[keep], codes, rows


class TaskBatchSampler(torch.utils.data.Sampler):
    """Batches of whole tasks, so every batch has pairs to rank."""

    def __init__(self, codes: np.ndarray, tasks_per_batch: int, shuffle: bool, seed: int):
        self.groups = [np.flatnonzero(codes == c) for c in np.unique(codes)]
        self.tasks_per_batch, self.shuffle, self.seed, self.epoch = tasks_per_batch, shuffle, seed, 0

    def __iter__(self):
        order = np.arange(len(self.groups))
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(order)
            self.epoch += 1
        for start in range(0, len(order), self.tasks_per_batch):
            yield np.concatenate([self.groups[g] for g in order[start:start + self.tasks_per_batch]]).tolist()

    def __len__(self):
        return (len(self.groups) + self.tasks_per_batch - 1) // self.tasks_per_batch


class CostDataModule(L.LightningDataModule):
    """Standardised rows of whole tasks, some held out for validation.

    ``scaling`` (a runtime's meta: feature_mean, feature_std, target_mean, target_std) standardises with
    another model's statistics instead of these rows' own: a model warm-started from that runtime
    (``warm_start``) must see its inputs and targets on the scale its weights were trained on.
    """

    def __init__(self, tasks, measurements, val_fraction: float = 0.15, tasks_per_batch: int = 2, seed: int = 0,
                 scaling: dict | None = None):
        super().__init__()
        x, y, censored, codes, _ = training_rows(tasks, measurements)
        measured = measurements.loc[measurements["runtime_s"].notna(), "task_id"]
        self.kernels = sorted(tasks.loc[tasks["task_id"].isin(measured), "kernel"].unique().tolist())  # the runtime's meta
        if len(np.unique(codes)) < 2:
            raise ValueError("the cost model needs measured schedules of at least two tasks")
        if scaling is not None:
            self.feature_mean = np.asarray(scaling["feature_mean"], dtype=np.float32)
            self.feature_std = np.asarray(scaling["feature_std"], dtype=np.float32)
            self.target_mean, self.target_std = float(scaling["target_mean"]), float(scaling["target_std"])
        else:
            self.feature_mean = x.mean(axis=0)
            self.feature_std = np.where(x.std(axis=0) > 1e-6, x.std(axis=0), 1.0).astype(np.float32)
            finished = y[~censored] if (~censored).sum() > 1 else y
            self.target_mean = float(finished.mean())
            self.target_std = float(finished.std()) if finished.std() > 1e-6 else 1.0
        xs = (x - self.feature_mean) / self.feature_std
        ys = (y - self.target_mean) / self.target_std
        self.finished_rows = (xs[~censored], ys[~censored])  # what the tree member fits (fit_tree_member)
        unique = np.unique(codes)
        rng = np.random.default_rng(seed)
        n_val = max(1, int(round(len(unique) * val_fraction))) if len(unique) >= 4 and val_fraction > 0 else 0
        val_codes = set(rng.permutation(unique)[:n_val].tolist())
        is_val = np.isin(codes, list(val_codes))
        self.train_part = self._part(xs, ys, censored, codes, ~is_val)
        self.val_part = self._part(xs, ys, censored, codes, is_val if n_val else ~is_val)
        self.tasks_per_batch, self.seed = tasks_per_batch, seed

    @staticmethod
    def _part(x, y, censored, codes, mask):
        return (torch.from_numpy(x[mask]), torch.from_numpy(y[mask]), torch.from_numpy(censored[mask]), codes[mask])

    def _loader(self, part, shuffle):
        x, y, c, codes = part
        dataset = torch.utils.data.TensorDataset(x, y, c, torch.from_numpy(codes.astype(np.int64)))
        sampler = TaskBatchSampler(codes, self.tasks_per_batch, shuffle, self.seed)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler)

    def train_dataloader(self):
        return self._loader(self.train_part, True)

    def val_dataloader(self):
        return self._loader(self.val_part, False)


def ranking_loss(pred: torch.Tensor, y: torch.Tensor, censored: torch.Tensor, codes: torch.Tensor, margin: float) -> torch.Tensor:
    """Pairwise logistic loss over pairs of one task where i is clearly faster than j."""
    same = codes[:, None] == codes[None, :]
    # A censored runtime is only a lower bound: it is slower than any finished schedule below its limit.
    faster = (y[:, None] + margin < y[None, :]) & ~censored[:, None]
    pairs = same & faster
    if not pairs.any():
        return pred.sum() * 0.0
    gap = pred[:, None] - pred[None, :]
    return nn.functional.softplus(gap[pairs]).mean()


def listwise_loss(pred: torch.Tensor, y: torch.Tensor, censored: torch.Tensor, codes: torch.Tensor,
                  temperature: float = 0.5) -> torch.Tensor:
    """ListNet per task, weighted toward the top: cross-entropy between softmax(-y / temperature), which puts
    most of its mass on the task's fastest schedules, and softmax(-pred). What a tuner needs is the top of
    each task's order; a pairwise loss spends as much on the order of two slow schedules."""
    losses = []
    target = torch.where(censored, y.max() + 1.0, y)  # a timed-out schedule belongs at the bottom
    for code in torch.unique(codes):
        rows = codes == code
        if rows.sum() < 2:
            continue
        wanted = torch.softmax(-target[rows] / temperature, dim=0)
        losses.append(-(wanted * torch.log_softmax(-pred[rows], dim=0)).sum())
    return torch.stack(losses).mean() if losses else pred.sum() * 0.0


def regression_loss(pred: torch.Tensor, y: torch.Tensor, censored: torch.Tensor) -> torch.Tensor:
    error = torch.where(censored, torch.clamp(y - pred, min=0.0), pred - y)
    return (error ** 2).mean()


class CostModule(L.LightningModule):
    def __init__(self, feature_mean, feature_std, target_mean: float, target_std: float, hidden: int = 128, depth: int = 3,
                 dropout: float = 0.1, lr: float = 5e-3, weight_decay: float = 1e-3, rank_weight: float = 1.0,
                 rank_margin: float = 0.05, list_weight: float = 0.0, members: int = 1, views: str = "all",
                 max_epochs: int = 80, tree_weight: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.net = CostModelNet(N_FEATURES, hidden, depth, dropout, members, member_columns(views, members))

    def _losses(self, batch):
        x, y, censored, codes = batch
        margin = self.hparams.rank_margin / self.hparams.target_std
        regression = rank = listwise = 0.0
        for pred in self.net(x):  # every member learns the whole objective
            regression = regression + regression_loss(pred, y, censored)
            rank = rank + ranking_loss(pred, y, censored, codes, margin)
            if self.hparams.list_weight > 0:
                listwise = listwise + listwise_loss(pred, y, censored, codes)
        members = len(self.net.members)
        regression, rank = regression / members, rank / members
        loss = regression + self.hparams.rank_weight * rank
        if self.hparams.list_weight > 0:
            loss = loss + self.hparams.list_weight * listwise / members
        return regression, rank, loss

    def training_step(self, batch, _):
        regression, rank, loss = self._losses(batch)
        self.log_dict({"train/loss": loss, "train/regression": regression, "train/rank": rank}, on_epoch=True, on_step=False,
                      batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch, _):
        regression, rank, loss = self._losses(batch)
        self.log_dict({"val/loss": loss, "val/regression": regression, "val/rank": rank}, on_epoch=True, batch_size=len(batch[0]))

    def configure_optimizers(self):
        # Only the trainable parameters: AdamW would otherwise still decay the layers warm_start froze.
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.hparams.max_epochs))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def export_weights(module: CostModule) -> dict:
    """Every member's linear layers as plain float32 arrays: ``m<j>_w<i>``, ``m<j>_b<i>``."""
    weights = {}
    for j, member in enumerate(module.net.members):
        for i, layer in enumerate(m for m in member if isinstance(m, nn.Linear)):
            weights[f"m{j}_w{i}"] = layer.weight.detach().cpu().numpy().astype(np.float32)
            weights[f"m{j}_b{i}"] = layer.bias.detach().cpu().numpy().astype(np.float32)
    return weights


def fit_tree_member(datamodule: CostDataModule, seed: int = 0) -> dict:
    """Gradient-boosted trees on the datamodule's finished rows (standardised features and target, training and
    validation tasks alike), as ``forest_*`` arrays for the runtime (``_forest``)."""
    from ._forest import fit_forest

    x, y = datamodule.finished_rows
    return fit_forest(x, y, seed=seed)


def warm_start(module: CostModule, runtime_weights: dict, runtime_meta: dict, trainable_layers: int | None = None) -> CostModule:
    """Start ``module`` from a trained runtime's weights (``export_weights``' layout) and freeze all but the last
    ``trainable_layers`` linear layers of every member (None: train them all).

    The module must have the runtime's shape (members, views, hidden, depth) and its standardisation: build its
    datamodule with ``scaling=runtime_meta`` and the module from that datamodule, so the copied weights read
    inputs and give outputs on the scale they were trained on. Returns the module.
    """
    hp = module.hparams
    for key in ("feature_mean", "feature_std", "target_mean", "target_std"):
        if not np.allclose(np.asarray(hp[key], dtype=np.float64), np.asarray(runtime_meta[key], dtype=np.float64)):
            raise ValueError(f"warm_start: the module's {key} is not the runtime's; build its datamodule with scaling=runtime_meta")
    members = {key.split("_")[0] for key in runtime_weights if not key.startswith("forest_")}
    if len(members) != len(module.net.members):
        raise ValueError(f"warm_start: the runtime has {len(members)} members, the module {len(module.net.members)}")
    columns = runtime_meta.get("member_columns")
    if columns is not None and [list(c) for c in columns] != module.net.columns:
        raise ValueError("warm_start: the module's members read other feature columns than the runtime's (views differ)")
    with torch.no_grad():
        for j, member in enumerate(module.net.members):
            layers = [m for m in member if isinstance(m, nn.Linear)]
            if f"m{j}_w{len(layers) - 1}" not in runtime_weights or f"m{j}_w{len(layers)}" in runtime_weights:
                raise ValueError(f"warm_start: member {j} has {len(layers)} linear layers, the runtime's another number")
            for i, layer in enumerate(layers):
                for name, param in (("w", layer.weight), ("b", layer.bias)):
                    value = torch.as_tensor(np.asarray(runtime_weights[f"m{j}_{name}{i}"]), dtype=param.dtype)
                    if value.shape != param.shape:
                        raise ValueError(f"warm_start: m{j}_{name}{i} is {tuple(value.shape)}, the module's {tuple(param.shape)}")
                    param.copy_(value)
                    param.requires_grad_(trainable_layers is None or i >= len(layers) - trainable_layers)
    return module
