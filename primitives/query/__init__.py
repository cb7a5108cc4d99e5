"""The learned query optimizer: steers DuckDB and PostgreSQL through hint sets (Bao).

Public surface: ``QueryOptimizer`` (the primitive, registered as "query") and
``QueryRuntime`` (``choose(sql, connection) -> arm``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._base import Guardrail, Primitive, register
from .._split import stable_fraction
from ._runtime import QueryRuntime
from ._schema import SCHEMA

__all__ = ["QueryOptimizer", "QueryRuntime"]


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


@register
class QueryOptimizer(Primitive):
    name = "query"
    schema = SCHEMA
    primary_metric = "total_latency_ratio"
    higher_is_better = False
    runtime_class = QueryRuntime
    on_policy = True
    reference_baselines = ("oracle",)

    def generate(self, config, seed):
        from ._source import generate

        return generate(config, seed)

    def extra_manifest_keys(self):
        return ("engine", "database_uri")

    def split(self, tables, holdout_fraction):
        """Held out two ways: whole templates never seen in training, and unseen parameters of seen templates."""
        queries = tables["queries"]
        templates = sorted(queries["template"].unique())
        unseen_templates = set()
        for workload in sorted({workload_of(t) for t in templates}):
            own = sorted((t for t in templates if workload_of(t) == workload), key=lambda t: stable_fraction(f"template|{t}"))
            if len(own) >= 3:
                unseen_templates.update(own[: max(1, int(round(len(own) * holdout_fraction / 2)))])
        in_unseen_template = queries["template"].isin(unseen_templates)
        unseen_params = ~in_unseen_template & queries["query_id"].map(lambda q: stable_fraction(f"query|{q}") < holdout_fraction)
        held = in_unseen_template | unseen_params
        held_queries = queries[held].assign(split=np.where(in_unseen_template[held], "unseen_templates", "unseen_params"))
        train = {**tables, "queries": queries[~held].reset_index(drop=True)}
        held_out = {**tables, "queries": held_queries.reset_index(drop=True)}
        if "executions" in tables:
            executions = tables["executions"]
            train["executions"] = executions[executions["query_id"].isin(train["queries"]["query_id"])].reset_index(drop=True)
            held_out["executions"] = executions[executions["query_id"].isin(held_queries["query_id"])].reset_index(drop=True)
        return train, held_out

    def build_datamodule(self, tables, params, seed):
        from ._model import QueryDataModule

        if "executions" not in tables:
            raise ValueError("the snapshot has no executions.parquet to learn from")
        keys = ("members", "batch_size", "val_fraction")
        datamodule = QueryDataModule(tables["queries"], tables["executions"], seed=seed, **{k: params[k] for k in keys if k in params})
        # The runtime ships with the arms it was trained on.
        datamodule.arms_by_engine = arms_by_engine(tables["arms"]) if "arms" in tables else {}
        return datamodule

    def build_module(self, datamodule, params):
        from ._model import QueryModule

        keys = ("hidden", "depth", "lr", "weight_decay", "relative_weight", "uncertainty_z", "min_gain", "calibrate",
                "calibrate_max_regression")
        return QueryModule(members=datamodule.members, target_mean=datamodule.target_mean, target_std=datamodule.target_std,
                           **{k: params[k] for k in keys if k in params})

    def suggest_params(self, trial, base):
        return {
            **base,
            "lr": trial.suggest_float("lr", 5e-4, 1e-2, log=True),
            "hidden": trial.suggest_categorical("hidden", [32, 64, 128]),
            "depth": trial.suggest_int("depth", 2, 4),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "relative_weight": trial.suggest_float("relative_weight", 0.0, 4.0),
        }

    def export_runtime(self, module, datamodule, directory):
        from ._model import calibrate_decision, export_weights

        meta = {
            "target_mean": module.hparams.target_mean,
            "target_std": module.hparams.target_std,
            "uncertainty_z": module.hparams.uncertainty_z,
            "min_gain": module.hparams.min_gain,
            "arms": datamodule.arms_by_engine,
        }
        if module.hparams.calibrate:  # the decision rule is fitted on the validation queries' recorded latencies
            meta.update(calibrate_decision(module, datamodule, module.hparams.calibrate_max_regression))
        QueryRuntime(export_weights(module), meta).save(Path(directory))

    def evaluate(self, runtime, tables, config):
        from ._evaluate import evaluate

        return evaluate(runtime, tables, config)

    def guardrails(self, config):
        return (Guardrail("worst_query_ratio", max=float(config.get("max_query_regression", 1.5))),)

    def input_example(self, tables):
        import pandas as pd

        executions = tables.get("executions")
        if executions is None or executions.empty:
            return None
        return pd.DataFrame({"plan": executions["plan"].head(3).tolist()})
