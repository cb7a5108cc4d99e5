"""The value model: each arm's latency relative to the native plan, per template and parameters.

``TemplateArmEnsemble`` is a plain ``nn.Module``: ``members`` independent
networks, stored as stacked weights so one batched einsum runs them all and
the runtime redoes the arithmetic in numpy. A member reads a learned
embedding of the query's template (the template's own history) and the
query's selectivity probes (its parameters), and predicts, for every arm,
log(latency under the arm / native latency): the quantity the choice depends
on (pairwise against native, as Lero compares plans).

Targets keep what the telemetry knows and no more. An arm cut at its time
limit gives a lower bound on its ratio, a native run cut at its limit an
upper bound; the loss only penalises a prediction on the wrong side of a
bound. Queries weigh by their native time (a slow query is where time is won
or lost), and each member sees its own bootstrap weights, so the members'
disagreement is the uncertainty that drives exploration and the fall-back to
the native plan.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from .._split import stable_fraction
from ._templates import N_FEATURES, aggregate_probes, fingerprint, probe_features

EXACT, LOWER, UPPER = 0, 1, 2   # what a target is: the ratio, a lower bound on it, an upper bound on it


class TemplateArmEnsemble(nn.Module):
    def __init__(self, n_templates: int, n_arms: int, members: int = 5, embed: int = 8, hidden: int = 64, depth: int = 2,
                 n_features: int = N_FEATURES):
        super().__init__()
        self.members = members
        self.embedding = nn.Parameter(torch.randn(members, max(1, n_templates), embed) * 0.1)
        dims = [embed + n_features] + [hidden] * depth + [n_arms]  # column 0: native log ms; then each arm's log ratio
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            self.weights.append(nn.Parameter(torch.randn(members, d_in, d_out) / np.sqrt(d_in)))
            self.biases.append(nn.Parameter(torch.zeros(members, d_out)))
        with torch.no_grad():  # start at "every arm as fast as native": no gain is claimed before it is learned
            self.weights[-1].mul_(0.1)

    def forward(self, template: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """(batch,) template indices and (batch, features) probes -> members x batch x arms: column 0 the
        standardised log native latency, column a > 0 the log ratio of arm a's latency to native."""
        h = torch.cat([self.embedding[:, template], features.unsqueeze(0).expand(self.members, -1, -1)], dim=-1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.einsum("mbi,mio->mbo", h, w) + b[:, None, :]
            if i < len(self.weights) - 1:
                h = nn.functional.silu(h)
        return h


def split_outputs(out, native_mean: float, native_std: float):
    """(log ratios with arm 0 at 0, native log ms) from the network's raw output (numpy or torch)."""
    ratios = out.copy() if isinstance(out, np.ndarray) else out.clone()
    ratios[..., 0] = 0.0
    return ratios, out[..., 0] * native_std + native_mean


# --- telemetry -> examples -------------------------------------------------------

def query_probes(queries: pd.DataFrame) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """(fingerprint, probe counts) per query of the snapshot's queries table.

    Fingerprints come from the SQL when the table has none; a query without recorded probes
    (``probes``: JSON [[rows, table rows], ...]) has none.
    """
    import json

    prints = (queries["fingerprint"].fillna("").astype(str).tolist() if "fingerprint" in queries
              else [""] * len(queries))
    prints = [p or fingerprint(sql) for p, sql in zip(prints, queries["sql"])]
    texts = queries["probes"].tolist() if "probes" in queries else [None] * len(queries)
    counts = [[tuple(pair) for pair in json.loads(t)] if isinstance(t, str) and t else [] for t in texts]
    return prints, counts


def usual_probes(prints: list[str], counts: list, mask: np.ndarray) -> dict[str, list[float]]:
    """Per template, the mean and spread of the probe aggregates over the queries in ``mask``."""
    by_template: dict[str, list] = {}
    for p, c, m in zip(prints, counts, mask):
        if m:
            by_template.setdefault(p, []).append(aggregate_probes(c))
    return {p: np.concatenate([np.mean(v, axis=0), np.std(v, axis=0)]).round(6).tolist() for p, v in by_template.items()}


def query_features(prints: list[str], counts: list, usual: dict) -> np.ndarray:
    if not prints:
        return np.zeros((0, N_FEATURES), np.float32)
    return np.stack([probe_features(c, usual.get(p)) for p, c in zip(prints, counts)])


def arm_outcomes(queries: pd.DataFrame, executions: pd.DataFrame, arm_ids: list[int]):
    """Per query and arm: the latency (or its bound) in ms and whether it was cut at its limit.

    Returns (ms, censored), each queries x arms; NaN where the arm did not run. A query run twice
    under one arm (rounds merged) keeps its median.
    """
    frame = executions[executions["query_id"].isin(queries["query_id"]) & executions["arm"].isin(arm_ids)]
    limit = frame["timeout_ms"] if "timeout_ms" in frame else frame.groupby("query_id")["latency_ms"].transform("max")
    timed_out = frame["timed_out"].astype(bool)
    frame = frame.assign(ms=np.where(timed_out, limit, frame["latency_ms"]), cut=timed_out.astype(float))
    table = frame.groupby(["query_id", "arm"]).agg(ms=("ms", "median"), cut=("cut", "max"))
    index = pd.MultiIndex.from_product([queries["query_id"], arm_ids])
    table = table.reindex(index)
    shape = (len(queries), len(arm_ids))
    return table["ms"].to_numpy(float).reshape(shape), table["cut"].to_numpy(float).reshape(shape) > 0


def ratio_targets(ms: np.ndarray, censored: np.ndarray):
    """log(arm / native) targets and their kinds (EXACT, LOWER, UPPER); NaN where nothing is known.
    Column 0 is the log native latency (a lower bound where the native run was cut)."""
    native_ms, native_cut = ms[:, :1], censored[:, :1]
    with np.errstate(divide="ignore", invalid="ignore"):
        target = np.log(np.maximum(ms, 1e-3) / np.maximum(native_ms, 1e-3))
    kind = np.where(censored, LOWER, EXACT)
    kind = np.where(native_cut & ~censored, UPPER, kind)
    unknown = np.isnan(ms) | np.isnan(native_ms) | (native_cut & censored)
    target[unknown] = np.nan
    target[:, 0] = np.log(np.maximum(native_ms[:, 0], 1e-3))
    kind[:, 0] = np.where(native_cut[:, 0], LOWER, EXACT)
    target[np.isnan(native_ms[:, 0]), 0] = np.nan
    return target.astype(np.float32), kind.astype(np.int64)


def hashed_validation(query_ids, fraction: float) -> np.ndarray:
    """Held-out queries of the training templates: the test is mostly unseen parameters of seen templates,
    so the decision rule is calibrated on the same kind of query."""
    mask = np.array([stable_fraction(f"val|{q}") < fraction for q in query_ids], bool)
    if fraction > 0 and len(mask) >= 4 and not mask.any():
        mask[:: max(2, int(round(1 / fraction)))] = True
    return mask


class QueryDataModule(L.LightningDataModule):
    """One example per query: its template, its probes, and its arms' latency ratios to native."""

    def __init__(self, queries: pd.DataFrame, executions: pd.DataFrame, arm_ids: list[int] | None = None,
                 members: int = 5, batch_size: int = 64, val_fraction: float = 0.2, seed: int = 0):
        super().__init__()
        arm_ids = sorted(set(arm_ids if arm_ids is not None else executions["arm"].astype(int).unique()) | {0})
        queries = queries[queries["query_id"].isin(executions.loc[executions["arm"] == 0, "query_id"])].reset_index(drop=True)
        if queries.empty:
            raise ValueError("no query ran under arm 0 (the native plan) to learn from")
        self.queries, self.arm_ids = queries, arm_ids
        self.fingerprints, counts = query_probes(queries)
        self.ms, self.censored = arm_outcomes(queries, executions, arm_ids)
        self.targets, self.kinds = ratio_targets(self.ms, self.censored)
        native_log = self.targets[:, 0][~np.isnan(self.targets[:, 0])]
        self.native_mean = float(native_log.mean()) if len(native_log) else 0.0
        self.native_std = float(native_log.std()) if len(native_log) > 1 and native_log.std() > 1e-6 else 1.0
        self.targets[:, 0] = (self.targets[:, 0] - self.native_mean) / self.native_std
        # A template is known once it is trained on; its index is its embedding row.
        in_val = hashed_validation(queries["query_id"], val_fraction)
        self.usual = usual_probes(self.fingerprints, counts, ~in_val)
        self.features = query_features(self.fingerprints, counts, self.usual)
        self.templates = {p: i for i, p in enumerate(dict.fromkeys(f for f, v in zip(self.fingerprints, in_val) if not v))}
        self.history = pd.Series([f for f, v in zip(self.fingerprints, in_val) if not v]).value_counts().to_dict()
        self.template_index = np.array([self.templates.get(f, -1) for f in self.fingerprints], np.int64)
        # Validation queries of templates the model never trains on cannot be scored as seen ones.
        in_val &= self.template_index >= 0
        self.train_index, self.val_index = np.flatnonzero(~in_val & (self.template_index >= 0)), np.flatnonzero(in_val)
        native = np.nan_to_num(self.ms[:, 0], nan=1.0)
        self.time_weight = np.clip(native / max(float(np.median(native)), 1e-3), 0.25, 8.0).astype(np.float32)
        rng = np.random.default_rng(seed)
        self.bootstrap = rng.poisson(1.0, size=(len(queries), members)).astype(np.float32)
        self.members, self.batch_size, self.seed = members, batch_size, seed

    @property
    def n_templates(self) -> int:
        return len(self.templates)

    def collate(self, indices):
        idx = np.asarray(indices, np.int64)
        return {
            "template": torch.from_numpy(np.maximum(self.template_index[idx], 0)),
            "features": torch.from_numpy(self.features[idx]),
            "target": torch.from_numpy(self.targets[idx]),
            "kind": torch.from_numpy(self.kinds[idx]),
            "weight": torch.from_numpy(self.bootstrap[idx].T * self.time_weight[idx]).contiguous(),  # members x batch
            "time_weight": torch.from_numpy(self.time_weight[idx]),
        }

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_index.tolist(), batch_size=self.batch_size, shuffle=True, generator=generator,
                          collate_fn=self.collate)

    def val_dataloader(self):
        # Without validation queries (a tiny snapshot) the training queries stand in, so val/loss exists.
        index = self.val_index if len(self.val_index) else self.train_index
        return DataLoader(index.tolist(), batch_size=512, shuffle=False, collate_fn=self.collate)


def bounded_error(pred: torch.Tensor, target: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """Prediction error where a bound counts only when it is crossed; zero where nothing is known."""
    error = pred - torch.nan_to_num(target)
    error = torch.where(kind == LOWER, torch.clamp(error, max=0.0), error)
    error = torch.where(kind == UPPER, torch.clamp(error, min=0.0), error)
    return torch.where(torch.isnan(target), torch.zeros_like(error), error)


class QueryModule(L.LightningModule):
    """Thin Lightning wrapper: loss, optimiser, ``train/`` and ``val/`` metrics."""

    def __init__(self, n_templates: int = 1, n_arms: int = 2, members: int = 5, embed: int = 8, hidden: int = 64,
                 depth: int = 2, lr: float = 3e-3, weight_decay: float = 1e-4, uncertainty_z: float = 1.0,
                 min_gain: float = 0.1, calibrate: bool = True, max_regression: float = 1.2, max_regression_ms: float = 3.0,
                 max_regression_share: float = 0.05, worst_regression: float = 1.5):
        super().__init__()
        self.save_hyperparameters()
        self.net = TemplateArmEnsemble(n_templates, n_arms, members, embed, hidden, depth)

    def _loss(self, batch, weight):
        pred = self.net(batch["template"], batch["features"])
        known = (~torch.isnan(batch["target"])).float()[None]
        error = bounded_error(pred, batch["target"][None], batch["kind"][None])
        w = weight[:, :, None] * known
        return (w * error**2).sum() / w.sum().clamp(min=1.0), pred

    def training_step(self, batch, batch_idx):
        loss, _ = self._loss(batch, batch["weight"])
        self.log("train/loss", loss, on_epoch=True, on_step=False, batch_size=len(batch["target"]))
        return loss

    def validation_step(self, batch, batch_idx):
        weight = batch["time_weight"][None].expand(self.hparams.members, -1)
        loss, pred = self._loss(batch, weight)
        exact = (batch["kind"] == EXACT) & ~torch.isnan(batch["target"])
        exact[:, 0] = False  # column 0 is the native latency, standardised
        if exact.any():
            log_error = (pred.mean(0) - torch.nan_to_num(batch["target"]))[exact].abs()
            self.log("val/ratio_error_median", torch.exp(log_error.median()), batch_size=int(exact.sum()))
        self.log("val/loss", loss, batch_size=len(batch["target"]))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def export_weights(module: QueryModule) -> dict[str, np.ndarray]:
    """The ensemble's parameters as numpy arrays (the runtime's format)."""
    net = module.net
    out = {"embedding": net.embedding.detach().cpu().numpy()}
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        out[f"layer{i}_w"], out[f"layer{i}_b"] = w.detach().cpu().numpy(), b.detach().cpu().numpy()
    return out


def member_predictions(module: QueryModule, datamodule: QueryDataModule, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-member (log ratios: members x queries x arms, native log ms: members x queries) at ``index``."""
    module.eval()
    batch = datamodule.collate(index)
    with torch.no_grad():
        out = module.net(batch["template"].to(module.device), batch["features"].to(module.device)).cpu().numpy()
    return split_outputs(out, datamodule.native_mean, datamodule.native_std)


def realised_ms(ms: np.ndarray, censored: np.ndarray, arm: int) -> tuple[float, float]:
    """(latency of the chosen arm, native latency) of one query from its recorded runs.

    A native run cut at its limit counts at its limit (the gain is at least what is shown); a chosen
    arm cut at its limit counts at its limit (at least ``timeout_factor`` times native: a regression
    either way); an arm the telemetry never ran (on-policy rounds run a few) counts as native: no
    evidence for or against the rule.
    """
    if np.isnan(ms[arm]):
        return float(ms[0]), float(ms[0])
    return float(ms[arm]), float(ms[0])


def calibrate_decision(module: QueryModule, datamodule: QueryDataModule,
                       z_grid=(0.0, 0.5, 1.0, 1.5, 2.0, 3.0), gain_grid=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5),
                       native_grid=(0.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)) -> dict:
    """Pick the decision rule (z, min_gain, min_native_ms) on held-out queries of the training templates.

    ``min_native_ms``: the native plan is left only for a query predicted to take at least this long
    natively, so a template whose slow parameterisations gain and whose fast ones regress is switched
    only where it is slow.

    A rule is admissible when it keeps the validation queries within ``max_regression`` of their native
    latency or ``max_regression_ms`` above it, whichever is larger, all but a ``max_regression_share``
    of them: telemetry latencies are single runs, and one noisy run among eighty otherwise vetoes every
    rule (measured: a window of three DuckDB rounds, 84 validation queries, every rule at 0.66-0.70x
    native total was vetoed by one query at 1.42x, and the model fell back to never switching).
    Among admissible rules those within half a percent of the lowest total latency tie, and the tie
    goes to the most conservative one. The rule that never leaves the native plan is always
    admissible. With fewer than five validation queries the configured rule stays.
    """
    from ._runtime import decide

    index = datamodule.val_index
    if len(index) < 5:
        return {}
    predictions, native_log = member_predictions(module, datamodule, index)
    expected_native = np.exp(native_log.mean(axis=0))
    ms, censored = datamodule.ms[index], datamodule.censored[index]
    arm_ids = datamodule.arm_ids
    known = [i for i in range(len(index)) if not np.isnan(ms[i, 0])]
    native_total = float(sum(ms[i, 0] for i in known))
    factor, slack = module.hparams.max_regression, module.hparams.max_regression_ms
    allowed = int(np.floor(module.hparams.max_regression_share * len(known)))
    worst_allowed = module.hparams.worst_regression
    scored = [(1.0, 1.0, np.inf, np.inf, np.inf)]  # never switch
    for z in z_grid:
        for gain in gain_grid:
            # The rule's choice per query before the native-latency gate; the gate only turns choices back to native.
            choices = []
            for i in known:
                ran = [j for j in range(len(arm_ids)) if not np.isnan(ms[i, j])]
                arm = decide(predictions[:, i, ran], [arm_ids[j] for j in ran], z, gain)
                choices.append(realised_ms(ms[i], censored[i], arm_ids.index(arm)))
            for floor in native_grid:
                total, worst, beyond, far = 0.0, 1.0, 0, 0
                for i, (chosen, native) in zip(known, choices):
                    if expected_native[i] < floor:
                        chosen = native
                    total += chosen
                    worst = max(worst, chosen / native)
                    beyond += chosen > max(factor * native, native + slack)
                    far += chosen > max(worst_allowed * native, native + slack)
                if beyond <= allowed and far == 0:
                    scored.append((total / native_total, worst, z, gain, floor))
    best = min(s[0] for s in scored)
    total, worst, z, gain, floor = max((s for s in scored if s[0] <= best + 0.005), key=lambda s: (s[3], s[4], s[2]))
    finite = lambda v: float(v) if np.isfinite(v) else 1e9  # noqa: E731
    return {"uncertainty_z": finite(z), "min_gain": finite(gain), "min_native_ms": finite(floor),
            "val_total_latency_ratio": float(total), "val_worst_query_ratio": float(worst), "val_queries": len(known)}


def settled_templates(module: QueryModule, datamodule: QueryDataModule, z: float, min_gain: float,
                      min_native_ms: float = 0.0, min_queries: int = 4) -> dict[str, int]:
    """Templates whose decision no parameter of its history changed: template -> its one arm.

    The runtime answers these without probing (their probes cost more than the choice is worth:
    a few statements per query, against queries of milliseconds); the probes run where the
    parameters decided something.
    """
    from ._runtime import decide

    known = np.flatnonzero(datamodule.template_index >= 0)
    if not len(known):
        return {}
    predictions, native_log = member_predictions(module, datamodule, known)
    expected_native = np.exp(native_log.mean(axis=0))
    arms: dict[str, set] = {}
    for k, i in enumerate(known):
        arm = decide(predictions[:, k, :], datamodule.arm_ids, z, min_gain) if expected_native[k] >= min_native_ms else 0
        arms.setdefault(datamodule.fingerprints[i], set()).add(arm)
    counts = pd.Series([datamodule.fingerprints[i] for i in known]).value_counts()
    return {t: int(next(iter(a))) for t, a in arms.items() if len(a) == 1 and counts[t] >= min_queries}
