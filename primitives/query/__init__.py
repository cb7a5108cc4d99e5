"""The learned query optimizer: steers DuckDB and PostgreSQL through hint sets (Bao's arms,
chosen per template and parameters as Kepler does).

Public surface: ``QueryOptimizer`` (the primitive, registered as "query") and
``QueryRuntime`` (``choose(sql, connection) -> arm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._base import Guardrail, Primitive, register
from .._params import TrainParams, bounded, pick
from .._report import Peer
from .._split import Groups, Hashed, HoldOut
from ._runtime import QueryRuntime
from ._schema import SCHEMA

__all__ = ["QueryOptimizer", "QueryParams", "QueryRuntime"]


def workload_of(template: str) -> str:
    return template.split("_", 1)[0]


def arms_by_engine(frame) -> dict[str, list[dict]]:
    """The arms table keyed by the engine whose default arms it is, or by "*" for a custom set."""
    from ._engines import ENGINES, arms_from_table

    arms = arms_from_table(frame)
    as_json = [{"arm": a.arm, "name": a.name, "settings": list(a.settings)} for a in arms]
    for name, engine in ENGINES.items():
        if [a.settings for a in engine().default_arms()] == [a.settings for a in arms]:
            return {name: as_json}
    return {"*": as_json}


@dataclass(frozen=True)
class QueryParams(TrainParams):
    members: int = bounded(5, 1, None)  # ensemble size: its disagreement is the uncertainty
    embed: int = bounded(8, 1, None)  # template embedding width (the template's own history)
    hidden: int = bounded(64, 1, None)
    depth: int = bounded(2, 1, None)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = bounded(64, 1, None)
    uncertainty_z: float = 1.0    # leave the native plan only when the members agree by z standard deviations
    min_gain: float = 0.1         # ... and the predicted gain exceeds it (log ratio)
    calibrate: bool = True        # refit z and min_gain on held-out queries of the training templates
    max_regression: float = 1.2   # ... keeping each within 1.2x of native
    max_regression_ms: float = 3.0  # ... or 3 ms above it, whichever is larger
    max_regression_share: float = bounded(0.05, 0.0, 1.0)  # ... all but this share of them (single-run latencies are noisy)
    worst_regression: float = 1.5  # ... and none beyond this (the evaluation's guardrail), nor beyond 1.2x more than that share
    min_history: int = bounded(2, 0, None)  # queries of a template trained on before it leaves the native plan
    val_fraction: float = bounded(0.2, 0.0, 0.9)


@register
class QueryOptimizer(Primitive):
    name = "query"
    description = (
        "Replaces the database's own plan choice: for each query it picks a hint set (an arm) of DuckDB's optimizer "
        "passes or PostgreSQL's planner switches, from the query's template and cheap selectivity probes, and keeps "
        "the engine's native plan unless its ensemble agrees an arm is clearly faster. Trained on the query log's "
        "measured latencies under every arm."
    )
    schema = SCHEMA
    primary_metric = "total_latency_ratio"
    higher_is_better = False
    runtime_class = QueryRuntime
    params_class = QueryParams
    # Held out two ways: whole templates never seen in training (a quarter of each workload's
    # templates, where it has three or more), and unseen parameters of seen templates.
    holdout = HoldOut(
        "queries",
        rules=(Groups("template", salt="template", stratify=workload_of, share=0.5, min_groups=3, label="unseen_templates"),
               Hashed("query_id", salt="query", label="unseen_params")),
        key="query_id", linked=("executions",), label_column="split")
    peers = (
        Peer("native", "the engine's own plan (arm 0)"),
        Peer("best_single_arm", "the one hint set that is best over the whole held-out workload"),
        Peer("oracle", "the best arm of every query, known in hindsight", reference_only=True),
    )
    manifest_keys = ("engine", "database_uri")
    on_policy = True
    timed_steps = frozenset({"snapshot", "evaluate"})  # latencies, measured at both

    def generate(self, config, seed):
        from ._source import generate

        return generate(config, seed)

    def complete_telemetry(self, tables, manifest, config):
        """A queries-only snapshot (a user's query log and a manifest naming its database): run it there."""
        if "executions" in tables:
            return None
        from ._source import gather_on

        return gather_on(tables["queries"], manifest, config)

    def build_datamodule(self, tables, params, seed):
        from ._model import QueryDataModule

        if "executions" not in tables:
            raise ValueError("the snapshot has no executions.parquet to learn from")
        arm_ids = tables["arms"]["arm"].astype(int).tolist() if "arms" in tables else None
        datamodule = QueryDataModule(tables["queries"], tables["executions"], arm_ids, seed=seed, **pick(params, QueryDataModule))
        # The runtime ships with the arms it was trained on.
        datamodule.arms_by_engine = arms_by_engine(tables["arms"]) if "arms" in tables else {}
        datamodule.min_history = params.min_history
        return datamodule

    def build_module(self, datamodule, params):
        from ._model import QueryModule

        taken = {"members", "n_templates", "n_arms"}
        return QueryModule(n_templates=datamodule.n_templates, n_arms=len(datamodule.arm_ids), members=datamodule.members,
                           **{k: v for k, v in pick(params, QueryModule).items() if k not in taken})

    def export_runtime(self, module, datamodule, directory):
        from ._model import calibrate_decision, export_weights, settled_templates

        meta = {
            "native_mean": datamodule.native_mean,
            "native_std": datamodule.native_std,
            "min_native_ms": 0.0,
            "uncertainty_z": module.hparams.uncertainty_z,
            "min_gain": module.hparams.min_gain,
            "arms": datamodule.arms_by_engine,
            "arm_ids": datamodule.arm_ids,
            "templates": datamodule.templates,
            "history": datamodule.history,
            "usual": datamodule.usual,
            "min_history": datamodule.min_history,
        }
        if module.hparams.calibrate:  # the decision rule is fitted on held-out queries of the training templates
            meta.update(calibrate_decision(module, datamodule))
        meta["settled"] = settled_templates(module, datamodule, meta["uncertainty_z"], meta["min_gain"], meta["min_native_ms"])
        QueryRuntime(export_weights(module), meta).save(Path(directory))

    def score(self, candidates, tables, config):
        from ._evaluate import score

        return score(candidates, tables, config)

    def config_keys(self, section):
        from ._source import DEFAULTS

        keys = {"source": set(DEFAULTS) | {"seed", "policy_dir"},
                "evaluate": {"repeats", "warmup", "timeout_ms", "timeout_factor", "min_timeout_ms", "max_query_regression",
                             "confirm_repeats"}}
        return frozenset(keys[section]) if section in keys else None

    def guardrails(self, config):
        from ._metrics import MAX_QUERY_REGRESSION

        return (Guardrail("worst_query_ratio", max=float(config.get("max_query_regression", MAX_QUERY_REGRESSION))),)

    def input_example(self, tables):
        import pandas as pd

        queries = tables.get("queries")
        if queries is None or queries.empty:
            return None
        head = queries.head(3)
        return pd.DataFrame({"sql": head["sql"].tolist(),
                             "probes": head["probes"].tolist() if "probes" in head else ["[]"] * len(head)})
