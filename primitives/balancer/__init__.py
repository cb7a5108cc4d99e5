"""The learned load balancer: replaces consistent / rendezvous hashing.

Public surface: ``Balancer`` (the primitive, registered as "balancer") and
``BalancerRuntime`` (``route(requests_df, servers_df) -> server ids``).
"""

from __future__ import annotations

from pathlib import Path

from .._base import Guardrail, Primitive, register
from ._runtime import BalancerRuntime
from ._schema import SCHEMA

__all__ = ["Balancer", "BalancerRuntime"]


@register
class Balancer(Primitive):
    name = "balancer"
    schema = SCHEMA
    primary_metric = "peak_to_mean"
    higher_is_better = False
    runtime_class = BalancerRuntime

    def generate(self, config, seed):
        from ._source import generate

        return generate(config, seed), {}

    def split(self, tables, holdout_fraction):
        # The newest requests are held out: the model is judged on traffic it has not seen.
        requests = tables["requests"].sort_values("ts", kind="stable")
        cut = int(round(len(requests) * (1.0 - holdout_fraction)))
        train = {**tables, "requests": requests.iloc[:cut].reset_index(drop=True)}
        held_out = {**tables, "requests": requests.iloc[cut:].reset_index(drop=True)}
        return train, held_out

    def build_datamodule(self, tables, params, seed):
        from ._model import BalancerDataModule

        keys = ("scenarios_per_epoch", "drop_fraction", "capacity_jitter", "mix_jitter", "hot_units")
        return BalancerDataModule(tables["servers"], tables["requests"], seed=seed, **{k: params[k] for k in keys if k in params})

    def build_module(self, datamodule, params):
        from ._model import BalancerModule

        keys = ("hidden", "depth", "lr", "temperature", "spread_weight", "weight_decay")
        return BalancerModule(len(datamodule.server_classes), **{k: params[k] for k in keys if k in params})

    def suggest_params(self, trial, base):
        return {
            **base,
            "lr": trial.suggest_float("lr", 3e-3, 1e-1, log=True),
            "hidden": trial.suggest_categorical("hidden", [16, 32, 64]),
            "temperature": trial.suggest_float("temperature", 0.005, 0.05, log=True),
            "spread_weight": trial.suggest_float("spread_weight", 1.0, 4.0),
            "capacity_jitter": trial.suggest_float("capacity_jitter", 0.05, 0.4),
        }

    def export_runtime(self, module, datamodule, directory):
        from ._hot import pack_hot_units
        from ._model import export_kernel

        runtime = BalancerRuntime(export_kernel(module, datamodule))
        if datamodule.hot_units > 0:
            units, fleet = datamodule.units, datamodule.fleet
            names, servers = pack_hot_units(runtime.fleet_logits(fleet), runtime.profile_index(units), units, fleet, datamodule.hot_units)
            runtime.attach_hot_table(names, servers)
        runtime.save(Path(directory))

    def evaluate(self, runtime, tables, config):
        from ._metrics import evaluate_routers
        from ._peers import PEERS

        routers = {name: make() for name, make in PEERS.items()} if config.get("baselines", True) else {}
        if runtime is not None:
            routers = {"learned": runtime, **routers}
        results = evaluate_routers(routers, tables["requests"], tables["servers"],
                                   disruption_trials=int(config.get("disruption_trials", 5)))
        return {"metrics": results.pop("learned", {}), "baselines": results}

    def guardrails(self, config):
        bound = float(config.get("max_disruption_ratio", 1.25))
        return (
            Guardrail("affinity_violation_rate", max=0.0),
            Guardrail("anti_affinity_violation_rate", max=0.0),
            Guardrail("class_violation_rate", max=0.0),
            Guardrail("disruption_ratio_remove", max=bound),
            Guardrail("disruption_ratio_add", max=bound),
        )

    def context_tables(self, tables):
        return {"servers": tables["servers"]}

    def input_example(self, tables):
        example = tables["requests"].head(5).drop(columns=["server_id", "latency_ms"], errors="ignore")
        # MLflow schemas have no nullable integer: the replica travels as a float (NaN = unset).
        return example.astype({"replica": "float64"})
