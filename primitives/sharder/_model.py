"""The sharding kernel and its training: a differentiable objective over the access trace.

The kernel places rows in an embedding space: a row's embedding is its
co-access embedding (``_features``: spectral, where the training trace
touched it) plus an MLP of all its features (table, ``attr_*`` values,
size). Shards own prototypes there: the trace's rows are first grouped into
a few clusters per shard (k-means over the co-access embedding), and the
clusters are partitioned over the shards so that loads balance and the
fewest transactions span two shards (``_refine.coarse_partition``). A row's
logit for a shard is the log-sum-exp of its closeness to the shard's
prototypes (plus a learned bias per prototype), and its placement the
softmax over shards, so, placing rows independently, a transaction stays on
one shard with probability sum_s prod_{i in T} p(i, s). Training minimises

    expected distributed-transaction rate
    + pair_weight * expected share of the transaction's row pairs split across shards
    + balance_weight * sum_s (excess of expected accesses and bytes over the capacity share)^2
    + move_weight * expected share of bytes moved away from ``current_shard``

over batches of training transactions, the newest tenth of the training
trace kept aside for ``val/loss``. Co-access features are hidden from a
share of the rows in every step (and attribute values from fewer), so the
kernel also learns to place a row from its attributes alone: rows inserted
after training have no co-access history.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

import lightning as L

from ._features import FeatureSpec, coaccess_embedding, key_column_scores, placement_keys
from ._refine import coarse_partition
from ._trace import Shards, Trace, read_only_tables


class ShardKernel(nn.Module):
    """logit(row, shard) = logsumexp over the shard's prototypes c of (bias_c - sharpness * |h(row) - c|^2).

    h(row) is the row's co-access embedding (x its mask) plus an MLP of all its features (table one-hot,
    attribute embeddings, size, co-access x mask, mask); the MLP starts at zero, so training starts from
    the spectral embedding and learns corrections and, for rows without co-access history, the whole
    embedding from attributes.
    """

    def __init__(self, n_tables: int, vocab_sizes: list[int], coaccess_dim: int, cluster_shard: list[int], n_shards: int,
                 hidden: int = 64, depth: int = 2, attr_dim: int = 8):
        super().__init__()
        self.n_tables = n_tables
        self.embeddings = nn.ModuleList(nn.Embedding(v + 1, attr_dim, padding_idx=v) for v in vocab_sizes)
        width = n_tables + 1 + len(vocab_sizes) * attr_dim + 1 + coaccess_dim + 1
        layers = []
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        out = nn.Linear(width, coaccess_dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.mlp = nn.Sequential(*layers, out)
        n_clusters = len(cluster_shard)
        self.prototypes = nn.Parameter(torch.zeros(n_clusters, coaccess_dim))
        self.cluster_bias = nn.Parameter(torch.zeros(n_clusters))
        self.log_sharpness = nn.Parameter(torch.tensor(float(np.log(initial_sharpness(coaccess_dim)))))
        owner = torch.full((n_clusters, n_shards), float("-inf"))
        owner[torch.arange(n_clusters), torch.as_tensor(cluster_shard, dtype=torch.long)] = 0.0
        self.register_buffer("owner", owner)  # log of the (cluster, shard) ownership matrix

    def embed(self, table, attrs, size, coaccess, mask):
        parts = [F.one_hot(table, self.n_tables + 1).float()]
        parts += [emb(attrs[:, j]) for j, emb in enumerate(self.embeddings)]
        parts += [size[:, None], coaccess * mask[:, None], mask[:, None]]
        return coaccess * mask[:, None] + self.mlp(torch.cat(parts, dim=1))

    def closeness(self, table, attrs, size, coaccess, mask):
        """(N, C): bias_c - sharpness * |h(row) - prototype c|^2."""
        h = self.embed(table, attrs, size, coaccess, mask)
        distance = (h * h).sum(1, keepdim=True) - 2.0 * h @ self.prototypes.T + (self.prototypes ** 2).sum(1)[None, :]
        return self.cluster_bias[None, :] - torch.exp(self.log_sharpness) * distance

    def forward(self, table, attrs, size, coaccess, mask):
        closeness = self.closeness(table, attrs, size, coaccess, mask)
        return torch.logsumexp(closeness[:, :, None] + self.owner[None, :, :], dim=1)  # (N, S)


def initial_sharpness(dim: int) -> float:
    # Spectral rows have length sqrt(dim); rows of clusters at a right angle are 2 dim apart (squared):
    # their logits start ~16 apart, a decided placement that training may still move at the margins.
    return 8.0 / max(dim, 1)


def kmeans(points: np.ndarray, weight: np.ndarray, k: int, seed: int, rounds: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(centres (k, D), label of each point): k-means++ seeding, then load-weighted Lloyd rounds."""
    rng = np.random.default_rng(seed)
    x, w = points.astype(np.float64), weight.astype(np.float64) + 1e-12
    if len(x) <= k:  # as many clusters as points: each its own, the rest anywhere
        return np.vstack([x, rng.standard_normal((k - len(x), points.shape[1])) * 0.01]), np.arange(len(x))
    first = rng.choice(len(x), p=w / w.sum())
    centres = [x[first]]
    gap = ((x - x[first]) ** 2).sum(1)
    for _ in range(k - 1):
        chance = gap * w
        pick = rng.choice(len(x), p=chance / chance.sum()) if chance.sum() > 0 else rng.integers(len(x))
        centres.append(x[pick])
        gap = np.minimum(gap, ((x - x[pick]) ** 2).sum(1))
    centres = np.array(centres)
    squared_norms = (x * x).sum(1)[:, None]

    def nearest(centres):  # squared distances in place: a (points x k) temporary per step costs more than the product
        distance = x @ centres.T
        distance *= -2.0
        distance += squared_norms
        distance += (centres * centres).sum(1)[None]
        return distance.argmin(1)

    for _ in range(rounds):
        label = nearest(centres)
        total = np.bincount(label, weights=w, minlength=k)
        for d in range(x.shape[1]):
            moved = np.bincount(label, weights=w * x[:, d], minlength=k)
            centres[:, d] = np.where(total > 0, moved / np.maximum(total, 1e-300), centres[:, d])
    return centres, nearest(centres)


def objective(logits, log_share, batch, balance_weight: float, move_weight: float, pair_weight: float):
    """(loss, expected distributed rate, expected peak over capacity share) of one batch.

    ``logits`` are those of the batch's rows; the transactions' pairs index them (``pair_txn``,
    ``pair_row``). The loads are estimated from a sample of rows drawn in proportion to their load
    (``sample``, each with the weights ``sample_accesses`` and ``sample_size``: its share of the
    total over its probability of being drawn, divided by the sample's size), so every step sees the
    hot rows that decide the peak without scoring every row.
    """
    logp = torch.log_softmax(logits + log_share, dim=1)  # (N, S)
    pair_logp = logp[batch["pair_row"]]
    per_txn = torch.zeros(int(batch["n_txns"]), logp.shape[1], dtype=logp.dtype, device=logp.device)
    per_txn = per_txn.index_add(0, batch["pair_txn"], pair_logp)
    rows = torch.bincount(batch["pair_txn"], minlength=per_txn.shape[0]).to(logp.dtype)
    present = rows > 0  # a batch without transactions (a tiny trace's empty validation) has one empty row
    single = torch.exp(torch.logsumexp(per_txn, dim=1))
    distributed = (1.0 - single)[present].sum() / present.sum().clamp_min(1)
    # The chance that all m rows share a shard is a product of m probabilities: flat (no gradient) until
    # placements are nearly decided. The expected share of the transaction's row pairs that share a shard
    # is its smooth companion (the classical relaxation of a graph cut), and leads early training.
    pair_p = pair_logp.exp()
    total = torch.zeros_like(per_txn).index_add(0, batch["pair_txn"], pair_p)
    squares = torch.zeros_like(per_txn).index_add(0, batch["pair_txn"], pair_p * pair_p)
    together = (total * total - squares).sum(1) / (rows * (rows - 1)).clamp_min(1.0)
    apart = (1.0 - together)[present].sum() / present.sum().clamp_min(1)
    p = logp[batch["sample"]].exp()
    share = torch.exp(log_share)
    access_share = (batch["sample_accesses"][:, None] * p).sum(0)
    byte_share = (batch["sample_size"][:, None] * p).sum(0)
    ratio = torch.stack([access_share / share, byte_share / share])
    balance = (F.relu(ratio - 1.0) ** 2).sum()
    current = batch["sample_current"]
    has_current = current >= 0
    stay = p[has_current, current[has_current]]
    moved = (batch["sample_size"][has_current] * (1.0 - stay)).sum()
    loss = distributed + pair_weight * apart + balance_weight * balance + move_weight * moved
    return loss, distributed, ratio.max()


class SharderModule(L.LightningModule):
    """Thin Lightning wrapper around ``ShardKernel`` and ``objective``."""

    def __init__(self, n_tables: int, vocab_sizes: list[int], coaccess_dim: int, log_share: list[float],
                 cluster_shard: list[int], hidden: int = 64, depth: int = 2, attr_dim: int = 8, lr: float = 0.01,
                 weight_decay: float = 0.0, balance_weight: float = 20.0, move_weight: float = 0.02,
                 pair_weight: float = 1.0, prototypes=None):
        super().__init__()
        self.save_hyperparameters(ignore=["prototypes"])  # restored with the weights, not as a setting
        self.kernel = ShardKernel(n_tables, vocab_sizes, coaccess_dim, cluster_shard, len(log_share), hidden, depth, attr_dim)
        if prototypes is not None:
            self.kernel.prototypes.data.copy_(torch.as_tensor(np.asarray(prototypes), dtype=torch.float32))
        self.register_buffer("log_share", torch.tensor(log_share, dtype=torch.float32), persistent=False)
        self.register_buffer("unseen", torch.tensor(vocab_sizes, dtype=torch.long), persistent=False)

    def logits(self, batch, masked: bool):
        attrs, mask = batch["attrs"], batch["coaccess_mask"]
        if masked:
            attrs = torch.where(batch["attr_drop"], self.unseen[None, :], attrs)
        return self.kernel(batch["table"], attrs, batch["size_feature"], batch["coaccess"], mask)

    def _step(self, batch, masked: bool):
        return objective(self.logits(batch, masked), self.log_share, batch, self.hparams.balance_weight,
                         self.hparams.move_weight, self.hparams.pair_weight)

    def training_step(self, batch, batch_idx):
        loss, distributed, peak = self._step(batch, masked=True)
        self.log("train/loss", loss, batch_size=1)
        self.log("train/expected_distributed_rate", distributed, batch_size=1)
        return loss

    def validation_step(self, batch, batch_idx):
        loss, distributed, peak = self._step(batch, masked=False)
        self.log("val/loss", loss, batch_size=1, prog_bar=True)
        self.log("val/expected_distributed_rate", distributed, batch_size=1)
        self.log("val/expected_peak_to_mean", peak, batch_size=1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class _Steps(torch.utils.data.Dataset):
    """``count`` batches an epoch; each draw a new one (seeded by the draw's number), so every epoch sees
    other transactions. Without a seed: the one fixed validation batch."""

    def __init__(self, make, count: int, seed: int | None):
        self.make, self.count, self.seed, self.draws = make, count, seed, 0

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        if self.seed is None:
            return self.make(None)
        self.draws += 1
        return self.make(np.random.default_rng((self.seed, self.draws)))


class SharderDataModule(L.LightningDataModule):
    """The training trace as tensors: rows it touches (features, load, current shard) and its transactions."""

    def __init__(self, items: pd.DataFrame, accesses: pd.DataFrame, shards: pd.DataFrame, coaccess_dim: int = 32,
                 coaccess_steps: int = 10, clusters_per_shard: int = 4, txns_per_step: int = 4096,
                 steps_per_epoch: int = 16, coaccess_dropout: float = 0.3, attr_dropout: float = 0.05,
                 min_key_score: float = 0.15, val_fraction: float = 0.1, load_sample: int = 4096,
                 pack_slack: float = 0.03, refine_rounds: int = 20, graph_start: bool = True,
                 row_moves: bool = True, row_slack: float = 0.08, pin_epsilon: float = 1e-4,
                 min_improvement: float = 0.01, seed: int = 0):
        super().__init__()
        # For the export (``_refine.group_placement`` and ``final_placement``).
        self.pack_slack, self.pin_epsilon, self.refine_rounds = float(pack_slack), float(pin_epsilon), int(refine_rounds)
        self.graph_start = bool(graph_start)
        self.row_moves, self.row_slack = bool(row_moves), float(row_slack)
        self.graph_starts: dict = {}  # (key column, pack slack) -> the export's graph start; copies share it
        self.min_improvement = float(min_improvement)
        self.fleet = Shards.from_frame(shards)
        self.replicated = sorted(read_only_tables(items, accesses))
        trace = Trace.build(items, accesses, frozenset(self.replicated))
        known = np.flatnonzero(np.bincount(trace.access_row, minlength=len(items)))  # rows of partitioned tables the training trace touches
        local = np.full(len(items), -1, dtype=np.int64)
        local[known] = np.arange(len(known))
        self.items = items.iloc[known].reset_index(drop=True)
        self.spec = FeatureSpec.fit(self.items)
        table, attrs, size_feature = self.spec.encode(self.items)
        row = local[trace.row]
        # Transactions of two or more rows are the ones placement can make distributed. The newest tenth
        # of them is kept out of everything learned (embedding, key choice, partition, training) and judges it.
        multi = np.bincount(trace.txn, minlength=trace.n_txns)[trace.txn] > 1
        codes, txn = np.unique(trace.txn[multi], return_inverse=True)  # code order is time order (ts-sorted trace)
        row = row[multi]
        cut = int(round(len(codes) * (1.0 - val_fraction)))
        self.train_pairs = (txn[txn < cut], row[txn < cut])
        self.val_pairs = (txn[txn >= cut] - cut, row[txn >= cut])
        self.n_train_txns, self.n_val_txns = cut, len(codes) - cut
        txn, row = self.train_pairs
        self.coaccess = coaccess_embedding(len(known), txn, row, max(int(coaccess_dim), 1), coaccess_steps, seed)
        self.has_coaccess = (np.abs(self.coaccess).sum(1) > 0).astype(np.float32)
        self.key_scores = key_column_scores(self.items, txn, row)
        self.key_column = _choose_key_column(self.items, self.key_scores, self.fleet.share, self.pack_slack, min_key_score)
        self.keys = placement_keys(self.items, self.key_column)
        self.accesses = np.bincount(local[trace.access_row], minlength=len(known)).astype(np.float64)
        self.size = self.items["size_bytes"].to_numpy(dtype=np.float64)
        self.current = self.fleet.index_of(self.items["current_shard"])
        self.access_share = self.accesses / max(self.accesses.sum(), 1e-12)
        self.size_share = self.size / max(self.size.sum(), 1e-12)
        self._defer_partition(max(int(clusters_per_shard), 1) * len(self.fleet), seed)
        self.load_probability = 0.5 * (self.access_share + self.size_share)
        self.load_probability /= self.load_probability.sum()
        self.static = {"table": table, "attrs": attrs, "size_feature": size_feature, "coaccess": self.coaccess,
                       "has_coaccess": self.has_coaccess}
        self.settings = dict(txns=int(txns_per_step), steps=int(steps_per_epoch), coaccess_dropout=float(coaccess_dropout),
                             attr_dropout=float(attr_dropout), sample=int(load_sample), seed=seed)

    def _defer_partition(self, n_clusters: int, seed: int) -> None:
        """``n_clusters`` clusters of the co-access embedding, partitioned over the shards (the kernel's starting
        point), built when ``prototypes`` or ``cluster_shard`` is first read: a module that is only
        ``reconfigured`` (the transfer decode's) never pays for its own, and they are most of its build time."""
        self._partition_knobs, self._partition = (n_clusters, seed, self.pack_slack), None

    def _partitioned(self) -> tuple[np.ndarray, np.ndarray]:
        if self._partition is None:
            n_clusters, seed, slack = self._partition_knobs
            touched = self.has_coaccess > 0
            load = np.column_stack([self.access_share, self.size_share])
            centres, label = kmeans(self.coaccess[touched], load[touched].sum(1), n_clusters, seed)
            cluster = np.full(len(self.items), -1, dtype=np.int64)
            cluster[touched] = label
            cluster_load = np.zeros((n_clusters, 2))
            np.add.at(cluster_load, label, load[touched])
            txn, row = self.train_pairs
            self._partition = centres, coarse_partition(txn, cluster[row], cluster_load, self.fleet.share, slack, seed)
        return self._partition

    @property
    def prototypes(self) -> np.ndarray:
        """(clusters, coaccess_dim) the clusters' centres."""
        return self._partitioned()[0]

    @property
    def cluster_shard(self) -> np.ndarray:
        """(clusters,) the shard position of every cluster."""
        return self._partitioned()[1]

    def reconfigured(self, clusters_per_shard: int, min_key_score: float, pack_slack: float,
                     seed: int = 0) -> "SharderDataModule":
        """A copy built with other construction knobs. The co-access embedding and the key columns' scores
        depend on the trace alone, so they are shared, not recomputed: trying a knob costs the k-means and
        the partition only (the transfer model scores a grid of knobs per deployment)."""
        import copy

        out = copy.copy(self)
        out.pack_slack = float(pack_slack)
        out.key_column = self.key_column_for(min_key_score, pack_slack)
        out.keys = self.keys if out.key_column == self.key_column else placement_keys(self.items, out.key_column)
        out._defer_partition(max(int(clusters_per_shard), 1) * len(self.fleet), seed)
        return out

    def key_column_for(self, min_key_score: float, pack_slack: float | None = None) -> str | None:
        """The key column this trace's scores pick under the threshold ``min_key_score`` (and ``pack_slack``,
        this module's own by default)."""
        slack = self.pack_slack if pack_slack is None else float(pack_slack)
        return _choose_key_column(self.items, self.key_scores, self.fleet.share, slack, min_key_score)

    @property
    def log_share(self) -> list[float]:
        return np.log(self.fleet.share).tolist()

    def _batch(self, rng: np.random.Generator | None) -> dict:
        n_rows = len(self.items)
        if rng is None:  # validation: the newest transactions and every row, nothing hidden
            txn, row = self.val_pairs
            n_txns = self.n_val_txns
            rows = np.arange(n_rows)
            sample = rows
            weight = np.ones(n_rows)
        else:
            txn, row = self.train_pairs
            chosen = rng.choice(self.n_train_txns, size=min(self.settings["txns"], self.n_train_txns), replace=False)
            position = np.full(self.n_train_txns, -1, dtype=np.int64)
            position[chosen] = np.arange(len(chosen))
            keep = position[txn] >= 0
            txn, row, n_txns = position[txn[keep]], row[keep], len(chosen)
            drawn = rng.choice(n_rows, size=min(self.settings["sample"], n_rows), p=self.load_probability)
            rows, inverse = np.unique(np.concatenate([row, drawn]), return_inverse=True)
            row, sample = inverse[: len(row)], inverse[len(row):]
            weight = 1.0 / (self.load_probability[drawn] * len(drawn))
        origin = rows[sample]
        coaccess_mask = self.has_coaccess[rows]
        if rng is None:
            attr_drop = np.zeros((len(rows), len(self.spec.columns)), dtype=bool)
        else:
            coaccess_mask = coaccess_mask * (rng.random(len(rows)) >= self.settings["coaccess_dropout"])
            attr_drop = rng.random((len(rows), len(self.spec.columns))) < self.settings["attr_dropout"]
        as_tensor = lambda x, dtype=torch.float32: torch.as_tensor(np.asarray(x), dtype=dtype)  # noqa: E731
        features = {name: as_tensor(self.static[name][rows], torch.long if name in ("table", "attrs") else torch.float32)
                    for name in self.static}
        return {**features, "pair_txn": as_tensor(txn, torch.long), "pair_row": as_tensor(row, torch.long),
                "n_txns": torch.tensor(max(n_txns, 1)), "coaccess_mask": as_tensor(coaccess_mask),
                "attr_drop": as_tensor(attr_drop, torch.bool), "sample": as_tensor(sample, torch.long),
                "sample_accesses": as_tensor(self.access_share[origin] * weight),
                "sample_size": as_tensor(self.size_share[origin] * weight),
                "sample_current": as_tensor(self.current[origin], torch.long)}

    def train_dataloader(self):
        s = self.settings
        return torch.utils.data.DataLoader(_Steps(self._batch, s["steps"], s["seed"]), batch_size=None, shuffle=False)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(_Steps(self._batch, 1, None), batch_size=None)


def _choose_key_column(items: pd.DataFrame, scores: dict[str, float], shares: np.ndarray, slack: float,
                       min_score: float) -> str | None:
    """The attribute whose values best explain co-access, among those whose every group fits on one shard (no
    value holding more of the rows than the largest capacity share, within the packing slack); None when none
    explains at least ``min_score``.

    A key with few groups per shard packs unevenly, but it beats no key: on two small TPC-C deployments (5
    warehouses on 4 shards, 7 on 7) keying by warehouse takes the distributed rate from 0.65 to 0.19 (peak load
    1.10 to 1.24) and from 0.98 to 0.13 (peak 1.83 to 1.50), where the old rule of 0.6 / shards refused it
    (benchmarks/RESULTS.md, "The sharder's key-column rule"). The load guardrail still judges the result."""
    fits = float(np.max(shares)) * (1.0 + slack)
    eligible = {}
    for column, score in scores.items():
        values = items[column].dropna()
        if values.empty or score < min_score:
            continue
        largest = values.value_counts().iloc[0] / len(items)
        if largest <= fits:
            eligible[column] = score
    return max(eligible, key=lambda c: (eligible[c], c)) if eligible else None


@torch.no_grad()
def soft_placement(module: SharderModule, datamodule: SharderDataModule) -> tuple[np.ndarray, np.ndarray]:
    """(rows, shards) probabilities of every training row, with every feature it has, and its nearest cluster."""
    module = module.to("cpu").eval()
    as_tensor = lambda x, dtype=torch.float32: torch.as_tensor(np.asarray(x), dtype=dtype)  # noqa: E731
    static = datamodule.static
    closeness = module.kernel.closeness(as_tensor(static["table"], torch.long), as_tensor(static["attrs"], torch.long),
                                        as_tensor(static["size_feature"]), as_tensor(static["coaccess"]),
                                        as_tensor(static["has_coaccess"]))
    logits = torch.logsumexp(closeness[:, :, None] + module.kernel.owner[None, :, :], dim=1)
    probability = torch.softmax(logits + module.log_share, dim=1).numpy().astype(np.float64)
    return probability, closeness.argmax(dim=1).numpy()


def export_kernel(module: SharderModule) -> dict:
    """The kernel's weights as numpy arrays (the runtime's attribute-only path)."""
    kernel = module.kernel
    linears = [m for m in kernel.mlp if isinstance(m, nn.Linear)]
    as_numpy = lambda t: t.detach().cpu().float().numpy().copy()  # noqa: E731
    return {
        "embeddings": [as_numpy(e.weight) for e in kernel.embeddings],
        "weights": [as_numpy(m.weight) for m in linears],
        "biases": [as_numpy(m.bias) for m in linears],
        "prototypes": as_numpy(kernel.prototypes),
        "cluster_bias": as_numpy(kernel.cluster_bias),
        "cluster_shard": np.asarray(module.hparams.cluster_shard, dtype=np.int64),
        "sharpness": float(torch.exp(kernel.log_sharpness).detach().cpu()),
    }
