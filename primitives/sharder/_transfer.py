"""Transfer for the sharder: the construction's knobs for a new deployment from its descriptor, without training.

What the sharder learns from a trace is its construction (``_model``): the
co-access embedding, k-means into ``clusters_per_shard`` prototypes per
shard, a balanced partition of the clusters, label propagation, packing
within ``pack_slack``, and a key column where one explains at least
``min_key_score`` of the co-access. Its gradient steps add nothing to that
(benchmarks/sharder_steps.py: the same distributed rate on three workloads,
worse on one, at 10x the time). So a transferred sharder decodes no kernel
weights: it decodes which knobs suit the deployment (OtterTune and ResTune's
knowledge of which configuration suits which workload) and runs the
construction, without gradient steps, on the deployment's own trace.

The transfer model: for every population member, a small grid of knob
settings is constructed on the older part of its training trace and scored
on the newer part (``distributed_txn_rate``, a setting that breaks the load
guardrail counted as infeasible), as regret: the share of what the best
setting gains over hashing that the setting gives away. The decoder is a
kernel regression from the standardised descriptor to that regret vector
(bandwidth chosen by leave-one-out over the population); decoding picks the
setting of least predicted regret. Numpy arrays and JSON only.

``decode(steps=N)`` with N > 0 is few-shot as a knob search, not gradient
steps: the N settings of least predicted regret are each constructed and
scored on the deployment's own training trace (older part against newer
part), and the best one is built.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from .._base import load_weights, save_weights

WEIGHTS, META = "transfer_model.npz", "transfer_model.json"
KNOBS = ("clusters_per_shard", "min_key_score", "pack_slack")
WORKLOAD_MIX = {"tpcc": 0.5, "social": 0.35, "kv": 0.15}  # kv: structure-free, where nothing beats hashing


@dataclass(frozen=True)
class SharderTransferParams:
    # Each knob's first value is configs/sharder.yaml's: where predictions tie, the configured knobs win.
    clusters_per_shard: tuple[int, ...] = (4, 2, 8)
    min_key_score: tuple[float, ...] = (0.15, 0.05, 0.3)
    pack_slack: tuple[float, ...] = (0.03, 0.01, 0.08)
    holdout_fraction: float = 0.2          # newest part of a member's training trace that scores its grid
    max_peak_to_mean_load: float = 1.25    # the sharder's load guardrail: a setting that breaks it is infeasible
    bandwidths: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # x the median member distance, picked by leave-one-out
    max_regret: float = 2.0                # one member's disaster does not outweigh the rest

    def grid(self) -> np.ndarray:
        """(K, 3) knob settings, in ``KNOBS`` order; the configured one first."""
        return np.array(list(itertools.product(self.clusters_per_shard, self.min_key_score, self.pack_slack)),
                        dtype=np.float64)

    @classmethod
    def from_meta(cls, meta: dict) -> "SharderTransferParams":
        return cls(**{f.name: tuple(meta[f.name]) if isinstance(meta[f.name], list) else meta[f.name]
                      for f in fields(cls) if f.name in meta})


def knobs_of(setting) -> dict:
    """A grid row as the sharder's training parameters."""
    return {"clusters_per_shard": int(setting[0]), "min_key_score": float(setting[1]), "pack_slack": float(setting[2])}


# --- the deployment family -------------------------------------------------------------------

def draw_deployment(seed: int, transactions: tuple[int, int] = (6000, 20000)) -> dict:
    """Tables of one deployment drawn from the sharder source's family: workload, shard count and capacities,
    scale (warehouses, users, keys), hidden regions, remote shares, community structure and key skew vary;
    transactions are log-uniform in ``transactions``. Tables, item ids and the attribute columns the schema
    does not declare get names the generator never uses (``attr_warehouse`` keeps its name: it is the
    schema's, the column a DBA's partitioning reads)."""
    from ._source import generate

    rng = np.random.default_rng(seed)
    workload = str(rng.choice(list(WORKLOAD_MIX), p=list(WORKLOAD_MIX.values())))
    shards = int(rng.integers(2, 9))
    cfg = {"workload": workload, "shards": shards,
           "transactions": int(round(np.exp(rng.uniform(np.log(transactions[0]), np.log(transactions[1])))))}
    if rng.random() < 0.3:
        cfg["capacities"] = np.round(rng.lognormal(0.0, 0.3, shards), 3).tolist()
    if workload == "tpcc":
        warehouses = int(rng.integers(max(4, shards), 17))
        cfg.update(warehouses=warehouses, districts_per_warehouse=int(rng.integers(5, 11)),
                   customers_per_district=int(rng.integers(5, 21)), catalogue_items=int(rng.integers(100, 301)),
                   remote_order_line=float(rng.uniform(0.005, 0.05)), remote_payment=float(rng.uniform(0.05, 0.3)),
                   regions=int(rng.choice([0, 2, 4])) if warehouses >= 8 else 0,
                   remote_in_region=float(rng.uniform(0.5, 0.95)), layout_seed=int(rng.integers(2**31)))
    elif workload == "social":
        users = int(rng.integers(1000, 4001))
        cfg.update(users=users, communities=int(rng.integers(6, 31)), products=int(rng.integers(300, 1501)),
                   initial_reviews=int(users * rng.uniform(1.0, 3.0)), trust_degree=float(rng.uniform(2.0, 8.0)),
                   cross_community=float(rng.uniform(0.03, 0.3)))
    else:
        low = int(rng.integers(2, 4))
        cfg.update(keys=int(rng.integers(2000, 8001)), keys_per_txn=[low, low + int(rng.integers(1, 5))],
                   zipf_exponent=float(rng.uniform(0.5, 1.1)) if rng.random() < 0.5 else 0.0,
                   read_share=float(rng.uniform(0.3, 0.9)))
    return rename(generate(cfg, int(rng.integers(2**31))), tag=f"{seed:x}", seed=seed)


def rename(tables: dict, tag: str, seed: int = 0) -> dict:
    """The same deployment under names never generated: tables, item ids (in the same order, so ranges cut
    alike) and undeclared attribute columns; ``current_shard`` re-hashed, as today's hashing would place the ids."""
    import pandas as pd

    from ._peers import hash_placement
    from ._schema import WAREHOUSE, attribute_columns

    rng = np.random.default_rng(seed)
    items, accesses = tables["items"].copy(), tables["accesses"].copy()
    names = pd.unique(items["table"])
    table_names = dict(zip(names, [f"t{tag}-{i}" for i in rng.permutation(len(names))]))
    items["table"] = items["table"].map(table_names)
    old_ids = items["item_id"].to_numpy(dtype=object)
    rank = np.empty(len(old_ids), dtype=np.int64)
    rank[np.argsort(old_ids, kind="stable")] = np.arange(len(old_ids))
    new_ids = (items["table"].astype(str) + "/" + pd.Series(rank).map("{:08d}".format).to_numpy()).to_numpy(dtype=object)
    accesses["item_id"] = new_ids[pd.Index(old_ids).get_indexer(accesses["item_id"].to_numpy(dtype=object))]
    items["item_id"] = new_ids
    others = [c for c in attribute_columns(items) if c != WAREHOUSE]
    items = items.rename(columns={c: f"attr_{tag}_{i}" for c, i in zip(others, rng.permutation(len(others)))})
    items["current_shard"] = pd.array(hash_placement(new_ids, tables["shards"]), dtype="Int32")
    return {"shards": tables["shards"], "items": items, "accesses": accesses}


# --- the construction --------------------------------------------------------------------------

def _datamodule(tables: dict, seed: int):
    """The knob-free part of the construction (trace, co-access embedding, key scores) over training tables."""
    from .._params import pick
    from . import SharderParams
    from ._model import SharderDataModule

    return SharderDataModule(tables["items"], tables["accesses"], tables["shards"], seed=seed,
                             **pick(SharderParams(), SharderDataModule))


def _build(datamodule, setting, directory: Path, seed: int):
    """The construction with one knob setting, no gradient steps: the kernel as initialised from the
    clusters, exported (soft placement, packing, label propagation) to ``directory``."""
    import torch

    from . import Sharder, SharderParams

    knobs = knobs_of(setting)
    configured = datamodule.reconfigured(**knobs, seed=seed)
    prim = Sharder()
    torch.manual_seed(seed)
    module = prim.build_module(configured, SharderParams(**knobs))
    prim.export_runtime(module, configured, Path(directory))
    return prim.load_runtime(Path(directory))


def _score_settings(tables: dict, grid: np.ndarray, params: SharderTransferParams, seed: int) -> dict:
    """Every setting of ``grid`` constructed on the older part of ``tables`` and scored on the newer part:
    ``rate`` and ``peak`` per setting, and hashing's rate on the same part."""
    from . import Sharder
    from ._metrics import evaluate_placers
    from ._peers import PEERS

    older, newer = Sharder.holdout.split(tables, params.holdout_fraction)
    datamodule = _datamodule(older, seed)
    rate, peak = np.empty(len(grid)), np.empty(len(grid))
    built: dict[tuple, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="aiprim-sharder-grid-") as tmp:
        for k, setting in enumerate(grid):
            # min_key_score acts only through the key column it picks: thresholds that pick the same one
            # build the same sharder, built once.
            same = (int(setting[0]), datamodule.key_column_for(float(setting[1]), float(setting[2])), float(setting[2]))
            if same not in built:
                runtime = _build(datamodule, setting, Path(tmp) / str(k), seed)
                metrics = evaluate_placers({"setting": runtime}, newer, older, disruption_trials=0,
                                           reshard_budget=None)["setting"]
                built[same] = (metrics["distributed_txn_rate"], metrics["peak_to_mean_load"])
            rate[k], peak[k] = built[same]
    hashed = evaluate_placers({"hash": PEERS["hash"](older)}, newer, older, disruption_trials=0, reshard_budget=None)["hash"]
    return {"rate": rate, "peak": peak, "hash_rate": float(hashed["distributed_txn_rate"])}


def feasible(peak: np.ndarray, params: SharderTransferParams) -> np.ndarray:
    """Settings within the load guardrail; where none of a deployment's is (a few large warehouses on three
    shards never balance), those within 2% of its most balanced one."""
    least = np.min(peak, axis=-1, keepdims=True)
    return peak <= np.maximum(params.max_peak_to_mean_load, least * 1.02)


def _regret(rate: np.ndarray, peak: np.ndarray, hash_rate: np.ndarray, params: SharderTransferParams) -> np.ndarray:
    """(M, K): the share of the best feasible setting's gain over hashing that each setting gives away; an
    infeasible setting, the most a member can weigh."""
    allowed = feasible(peak, params)
    best = np.where(allowed, rate, np.inf).min(axis=1, keepdims=True)
    gain = np.maximum(hash_rate[:, None] - best, 1e-3)
    regret = np.clip((rate - best) / gain, 0.0, params.max_regret)
    return np.where(allowed, regret, params.max_regret)


def _kernel_weights(points: np.ndarray, query: np.ndarray, bandwidth: float) -> np.ndarray:
    squared = ((points - query) ** 2).sum(axis=1)
    # Shifted by the nearest member's distance: a query far from everyone still weighs its nearest most.
    weights = np.exp(-(squared - squared.min()) / (2.0 * bandwidth ** 2))
    return weights / weights.sum()


@dataclass
class SharderTransferState:
    """A fitted transfer model: every member's descriptor and regret per knob setting, and the kernel's bandwidth."""

    grid: np.ndarray          # (K, 3) settings, KNOBS order
    descriptors: np.ndarray   # (M, F) raw descriptors of the members
    regret: np.ndarray        # (M, K)
    rate: np.ndarray          # (M, K) distributed_txn_rate on the member's newer training part
    peak: np.ndarray          # (M, K) peak_to_mean_load there
    hash_rate: np.ndarray     # (M,) hashing's rate there
    mean: np.ndarray
    scale: np.ndarray
    bandwidth: float
    params: SharderTransferParams
    members: int
    train_loss: float         # leave-one-out mean regret of the decoded setting

    def save(self, directory: Path) -> None:
        arrays = {"grid": self.grid, "descriptors": self.descriptors, "regret": self.regret, "rate": self.rate,
                  "peak": self.peak, "hash_rate": self.hash_rate, "descriptor_mean": self.mean,
                  "descriptor_scale": self.scale}
        save_weights(directory, arrays, {"params": asdict(self.params), "members": self.members, "knobs": list(KNOBS),
                                         "bandwidth": self.bandwidth, "train_loss": self.train_loss}, WEIGHTS, META)

    @classmethod
    def load(cls, directory: Path) -> "SharderTransferState":
        arrays, meta = load_weights(directory, WEIGHTS, META)
        return cls(arrays["grid"], arrays["descriptors"], arrays["regret"], arrays["rate"], arrays["peak"],
                   arrays["hash_rate"], arrays["descriptor_mean"], arrays["descriptor_scale"], float(meta["bandwidth"]),
                   SharderTransferParams.from_meta(meta["params"]), int(meta["members"]), float(meta["train_loss"]))

    def standardise(self, descriptor: np.ndarray) -> np.ndarray:
        # Clipped: a deployment far outside the population is read as its nearest edge, not extrapolated.
        return np.clip((np.asarray(descriptor, dtype=np.float64) - self.mean) / self.scale, -4.0, 4.0)

    def predicted_regret(self, descriptor: np.ndarray) -> np.ndarray:
        """(K,) the regret of every setting expected for this deployment."""
        points = self.standardise(self.descriptors)
        return _kernel_weights(points, self.standardise(descriptor), self.bandwidth) @ self.regret

    def embed(self, descriptor: np.ndarray) -> np.ndarray:
        """The deployment's point: its predicted regret per setting (deployments that want the same knobs are close)."""
        return self.predicted_regret(descriptor)

    def ranked(self, descriptor: np.ndarray) -> np.ndarray:
        """Setting indices, least predicted regret first (ties: grid order, the configured setting first)."""
        return np.argsort(self.predicted_regret(descriptor), kind="stable")

    def knobs(self, descriptor: np.ndarray) -> dict:
        return knobs_of(self.grid[self.ranked(descriptor)[0]])


def _leave_one_out(points: np.ndarray, regret: np.ndarray, bandwidth: float) -> float:
    """Mean regret of the setting each member would decode from the others."""
    chosen = []
    for m in range(len(points)):
        others = np.arange(len(points)) != m
        predicted = _kernel_weights(points[others], points[m], bandwidth) @ regret[others]
        chosen.append(regret[m, int(np.argmin(predicted))])
    return float(np.mean(chosen))


class SharderTransfer:
    """The sharder's side of the transfer stage (``Primitive.transfer_model``)."""

    params_class = SharderTransferParams
    state_class = SharderTransferState

    def draw_sizes(self, source: dict) -> dict:
        """Family draw sizes for a profile's source: a third of its transactions up to all of them (the
        balancer's size kwargs mean nothing here: each transfer model reads its own primitive's source)."""
        most = int(source.get("transactions", 20_000))
        return {"transactions": (max(3000, most // 3), max(6000, most))}

    def draw_deployment(self, seed: int, transactions: tuple[int, int] = (6000, 20000)) -> dict:
        return draw_deployment(seed, transactions)

    def fit(self, population: list[tuple[dict, np.ndarray]], params: SharderTransferParams | None = None,
            seed: int = 0) -> SharderTransferState:
        """Score the knob grid on every member of ``[(training tables, descriptor), ...]`` and fit the decoder."""
        if len(population) < 2:
            raise ValueError(f"the transfer model needs a population of at least 2 deployments, not {len(population)}")
        params = params or SharderTransferParams()
        grid = params.grid()
        scored = [_score_settings(tables, grid, params, seed) for tables, _ in population]
        rate = np.stack([s["rate"] for s in scored])
        peak = np.stack([s["peak"] for s in scored])
        hash_rate = np.array([s["hash_rate"] for s in scored])
        regret = _regret(rate, peak, hash_rate, params)
        descriptors = np.stack([np.asarray(d, dtype=np.float64) for _, d in population])
        mean, scale = descriptors.mean(axis=0), np.maximum(descriptors.std(axis=0), 1e-3)
        points = np.clip((descriptors - mean) / scale, -4.0, 4.0)
        distance = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=2))
        typical = float(np.median(distance[np.triu_indices(len(points), 1)])) or 1.0
        losses = {factor: _leave_one_out(points, regret, factor * typical) for factor in params.bandwidths}
        factor = min(sorted(losses, reverse=True), key=losses.get)  # ties: the smoother decoder
        return SharderTransferState(grid, descriptors, regret, rate, peak, hash_rate, mean, scale, factor * typical,
                                    params, len(population), losses[factor])

    def construct(self, tables: dict, knobs: dict, directory: Path, seed: int = 0):
        """The sharder built by its construction alone (no gradient steps) with ``knobs`` on training tables."""
        setting = [knobs[k] for k in KNOBS]
        return _build(_datamodule(tables, seed), setting, Path(directory), seed)

    def decode(self, state: SharderTransferState, descriptor: np.ndarray, tables: dict, directory: Path,
               steps: int = 0, seed: int = 0, shuffled_from: np.ndarray | None = None):
        """Write the sharder for the deployment of ``tables`` (its training part) to ``directory``; returns it.

        The knobs come from ``descriptor`` (from ``shuffled_from``, another deployment's, for the leakage
        control). ``steps`` > 0 tries that many of the best predicted settings on this deployment's own
        trace and builds the best (a knob search; gradient steps would add nothing). The chosen knobs are
        on ``runtime.knobs`` and in the runtime's saved ``training_report["transfer"]``."""
        import torch  # noqa: F401  (imported before the clock starts, as the balancer's decode does)

        from ._model import SharderDataModule  # noqa: F401

        started = time.perf_counter()
        used = descriptor if shuffled_from is None else shuffled_from
        ranked = state.ranked(used)
        predicted = state.predicted_regret(used)
        chosen = int(ranked[0])
        tried = {}
        if steps > 0:
            candidates = state.grid[ranked[:steps]]
            scored = _score_settings(tables, candidates, state.params, seed)
            allowed = feasible(scored["peak"], state.params)
            order = np.lexsort((scored["rate"], ~allowed))  # feasible first, then the lowest rate
            chosen = int(ranked[order[0]])
            tried = {"settings": [knobs_of(s) for s in candidates], "rate": scored["rate"].tolist(),
                     "peak_to_mean_load": scored["peak"].tolist()}
        runtime = _build(_datamodule(tables, seed), state.grid[chosen], Path(directory), seed)
        runtime.knobs = knobs_of(state.grid[chosen])
        runtime.training_report["transfer"] = {
            "knobs": runtime.knobs, "from": "descriptor" if shuffled_from is None else "shuffled descriptor",
            "predicted_regret": float(predicted[chosen]), "members": state.members, "tried": tried}
        runtime.save(Path(directory))
        runtime.decode_seconds = time.perf_counter() - started
        return runtime
