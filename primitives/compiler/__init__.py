"""The learned compiler cost model: ranks schedules of real, measured CPU (and GPU) kernels.

Public surface: ``CompilerCostModel`` (the primitive, registered as
"compiler"), ``CompilerRuntime`` (``predict(task, schedules)`` and
``rank(task, schedules)``), ``autotune`` and the ``TaskError`` raised for a
task or schedule that does not fit its family.
"""

from __future__ import annotations

from pathlib import Path

from .._base import Guardrail, Primitive, register
from .._split import stable_fraction
from ._runtime import CompilerRuntime
from ._schema import SCHEMA
from ._space import FAMILIES, TaskError

__all__ = ["CompilerCostModel", "CompilerRuntime", "TaskError", "FAMILIES", "autotune"]


def autotune(*args, **kwargs):
    from ._autotune import autotune as run

    return run(*args, **kwargs)


@register
class CompilerCostModel(Primitive):
    name = "compiler"
    schema = SCHEMA
    # Kendall tau, not top-1: top-1 saturates at 1.0, and a champion at 1.0 could never be beaten by a margin.
    primary_metric = "kendall_tau"
    higher_is_better = True
    runtime_class = CompilerRuntime

    def generate(self, config, seed):
        from ._source import generate

        return generate(config, seed)

    def extra_manifest_keys(self):
        return ("target",)

    def split(self, tables, holdout_fraction):
        """Whole tasks (shapes) are held out, at least one per family that has three or more."""
        tasks = tables["tasks"]
        held = set()
        for _, own in tasks.groupby("kernel", sort=True):
            ranked = sorted(own["task_id"], key=lambda t: stable_fraction(f"task|{t}"))
            count = int(round(len(ranked) * holdout_fraction))
            if len(ranked) >= 3:
                count = max(1, count)
            held.update(ranked[:count])
        in_held = tasks["task_id"].isin(held)
        measurements = tables["measurements"]
        m_held = measurements["task_id"].isin(held)
        train = {"tasks": tasks[~in_held].reset_index(drop=True), "measurements": measurements[~m_held].reset_index(drop=True)}
        held_out = {"tasks": tasks[in_held].reset_index(drop=True), "measurements": measurements[m_held].reset_index(drop=True)}
        return train, held_out

    def build_datamodule(self, tables, params, seed):
        from ._model import CostDataModule

        keys = ("val_fraction", "tasks_per_batch")
        return CostDataModule(tables["tasks"], tables["measurements"], seed=seed, **{k: params[k] for k in keys if k in params})

    def build_module(self, datamodule, params):
        from ._model import CostModule

        keys = ("hidden", "depth", "dropout", "lr", "weight_decay", "rank_weight", "rank_margin", "max_epochs")
        return CostModule(datamodule.feature_mean.tolist(), datamodule.feature_std.tolist(), datamodule.target_mean,
                          datamodule.target_std, **{k: params[k] for k in keys if k in params})

    def suggest_params(self, trial, base):
        return {
            **base,
            "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
            "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
            "depth": trial.suggest_int("depth", 2, 4),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "rank_weight": trial.suggest_float("rank_weight", 0.0, 4.0),
        }

    def export_runtime(self, module, datamodule, directory):
        from ._features import FEATURE_NAMES
        from ._model import export_weights

        meta = {"feature_mean": list(module.hparams.feature_mean), "feature_std": list(module.hparams.feature_std),
                "target_mean": module.hparams.target_mean, "target_std": module.hparams.target_std,
                "features": list(FEATURE_NAMES)}
        CompilerRuntime(export_weights(module), meta).save(Path(directory))

    def evaluate(self, runtime, tables, config):
        from ._evaluate import evaluate

        return evaluate(runtime, tables, config)

    def evaluation_figures(self, report):
        from ._evaluate import figures

        return figures(report)

    def guardrails(self, config):
        # Never ship a model whose first pick on held-out tasks is worse than the champion's.
        return (Guardrail("top1_score", no_worse_than_champion=True, higher_is_better=True),)

    def input_example(self, tables):
        import pandas as pd

        measurements = tables["measurements"].head(3)
        if measurements.empty:
            return None
        info = tables["tasks"].set_index("task_id")
        return pd.DataFrame({"kernel": measurements["task_id"].map(info["kernel"]).to_numpy(),
                             "shape": measurements["task_id"].map(info["shape"]).to_numpy(),
                             "schedule": measurements["schedule"].to_numpy()})
