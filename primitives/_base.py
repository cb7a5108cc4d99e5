"""The primitive contract and the registry of primitives.

A primitive is everything the pipeline needs to keep one learned system
component improving: where its telemetry comes from and what shape it has,
how to train and tune its model, how its runtime is exported and loaded, and
how it is scored against the classical peers it replaces.

Heavy dependencies (Lightning, Optuna) are imported inside the methods that
need them, so loading a runtime never imports them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from ._schema import Schema

ENTRY_POINT_GROUP = "aiprim.primitives"


class Runtime(abc.ABC):
    """The object a production system calls on its hot path."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: Path) -> "Runtime":
        """Load from a directory written by ``Primitive.export_runtime``."""

    def predict_frame(self, frame, context: dict):
        """Tabular prediction for MLflow's pyfunc; ``context`` holds the snapshot's other tables."""
        raise NotImplementedError(f"{type(self).__name__} has no tabular prediction")


def save_weights(directory: Path, weights: dict, meta: dict, weights_name: str, meta_name: str) -> None:
    """A runtime's arrays as .npz (loaded with allow_pickle=False) beside its JSON metadata."""
    import json

    import numpy as np

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / weights_name, **weights)
    (directory / meta_name).write_text(json.dumps(meta, indent=2))


def load_weights(directory: Path, weights_name: str, meta_name: str) -> tuple[dict, dict]:
    """(arrays, metadata) written by ``save_weights``; never unpickles."""
    import json

    import numpy as np

    directory = Path(directory)
    with np.load(directory / weights_name, allow_pickle=False) as data:
        weights = {k: data[k] for k in data.files}
    return weights, json.loads((directory / meta_name).read_text())


@dataclass(frozen=True)
class Guardrail:
    """A bound on one metric of the challenger: fixed (``max``/``min``), or the champion's own value."""

    metric: str
    max: float | None = None
    min: float | None = None
    no_worse_than_champion: bool = False
    higher_is_better: bool = False  # direction, for ``no_worse_than_champion``

    def broken_by(self, metrics: dict[str, Any], champion: dict[str, Any] | None = None) -> str | None:
        value = metrics.get(self.metric)
        if value is None:
            return f"{self.metric} missing"
        if self.max is not None and value > self.max:
            return f"{self.metric}={value:.4g} > {self.max:g}"
        if self.min is not None and value < self.min:
            return f"{self.metric}={value:.4g} < {self.min:g}"
        reference = (champion or {}).get(self.metric) if self.no_worse_than_champion else None
        if reference is not None:
            worse = value < reference if self.higher_is_better else value > reference
            if worse:
                return f"{self.metric}={value:.4g} worse than the champion's {reference:.4g}"
        return None


class Primitive(abc.ABC):
    """Base class of every learned primitive (see DESIGN.md)."""

    name: ClassVar[str]
    schema: ClassVar[Schema]
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = False
    runtime_class: ClassVar[type[Runtime]]
    # On-policy sources (the query optimizer) gather telemetry with the current champion:
    # the snapshot step passes its runtime directory as ``policy_dir`` in the source config.
    on_policy: ClassVar[bool] = False
    # Peers reported for reference but not deployable (the query optimizer's per-query oracle):
    # a first version is never required to beat them.
    reference_baselines: ClassVar[tuple[str, ...]] = ()

    # --- telemetry -----------------------------------------------------
    @abc.abstractmethod
    def generate(self, config: dict, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Produce telemetry from the embedded source: (tables, extra manifest keys)."""

    def extra_manifest_keys(self) -> tuple[str, ...]:
        return ()

    def drift_columns(self) -> dict[str, tuple[str, ...]]:
        """Numeric columns watched by the drift check, per table."""
        return {t.name: tuple(c.name for c in t.columns if c.drift) for t in self.schema.tables}

    @abc.abstractmethod
    def split(self, tables: dict[str, Any], holdout_fraction: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split a snapshot's tables into (train, held-out), deterministically."""

    # --- learning ------------------------------------------------------
    @abc.abstractmethod
    def build_datamodule(self, tables: dict[str, Any], params: dict, seed: int):
        """A LightningDataModule over training tables."""

    @abc.abstractmethod
    def build_module(self, datamodule, params: dict):
        """A LightningModule wrapping the primitive's plain nn.Module."""

    @abc.abstractmethod
    def suggest_params(self, trial, base: dict) -> dict:
        """Optuna search space: base params with tuned keys replaced."""

    @abc.abstractmethod
    def export_runtime(self, module, datamodule, directory: Path) -> None:
        """Write what the runtime needs (weights load with weights_only=True)."""

    def load_runtime(self, directory: Path) -> Runtime:
        return self.runtime_class.load(Path(directory))

    def train_runtime(self, tables: dict[str, Any], params: dict, directory: Path, seed: int = 0, accelerator: str = "cpu") -> Runtime:
        """Train without tracking (on CPU unless told otherwise) and export to ``directory``: for tests, notebooks and benchmarks.

        The pipeline's ``flows.steps.train`` adds checkpoints, MLflow and the configured accelerator.
        """
        import lightning as L

        L.seed_everything(seed, verbose=False)
        datamodule = self.build_datamodule(tables, params, seed)
        module = self.build_module(datamodule, params)
        L.Trainer(max_epochs=int(params.get("max_epochs", 10)), accelerator=accelerator, devices=1, logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  gradient_clip_val=1.0).fit(module, datamodule)
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.export_runtime(module, datamodule, Path(directory))
        return self.load_runtime(Path(directory))

    # --- evaluation ----------------------------------------------------
    @abc.abstractmethod
    def evaluate(self, runtime: Runtime | None, tables: dict[str, Any], config: dict) -> dict:
        """Score the runtime (when given) and every baseline on the same tables.

        Returns ``{"metrics": {...}, "baselines": {peer: {...}}}``; with
        ``config["baselines"]`` false the peers are skipped (re-scoring a
        champion on data whose peers were already scored).
        """

    @abc.abstractmethod
    def guardrails(self, config: dict) -> tuple[Guardrail, ...]:
        """Bounds a challenger must respect to be promoted."""

    def evaluation_figures(self, report: dict) -> dict:
        """Extra plots of an evaluation report, ``{artifact path: matplotlib figure}``, logged to MLflow."""
        return {}

    def input_example(self, tables: dict[str, Any]):
        """A small input for the logged model's signature."""
        return None

    def context_tables(self, tables: dict[str, Any]) -> dict[str, Any]:
        """Tables the logged pyfunc model needs beside its input (the balancer's fleet); none by default."""
        return {}

    def better(self, a: float, b: float, margin: float = 0.0) -> bool:
        """Whether metric value ``a`` beats ``b`` by a relative margin."""
        if self.higher_is_better:
            return a > b * (1.0 + margin)
        return a < b * (1.0 - margin)

    def best_baseline(self, report: dict) -> tuple[str, float]:
        scored = [(name, m[self.primary_metric]) for name, m in report["baselines"].items()
                  if self.primary_metric in m and name not in self.reference_baselines]
        pick = max if self.higher_is_better else min
        return pick(scored, key=lambda item: item[1])


class UnknownPrimitiveError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return self.args[0]


_REGISTRY: dict[str, type[Primitive]] = {}
_entry_points_loaded = False


def register(cls: type[Primitive]) -> type[Primitive]:
    """Class decorator: make a primitive available as ``primitives.get(cls.name)``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__qualname__} needs a class attribute 'name'")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"primitive {cls.name!r} is already registered by {existing.__module__}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin_and_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from . import balancer, compiler, query  # noqa: F401  (register themselves)

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            ep.load()


def names() -> list[str]:
    _load_builtin_and_entry_points()
    return sorted(_REGISTRY)


def get(name: str) -> Primitive:
    _load_builtin_and_entry_points()
    try:
        return _REGISTRY[name]()
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownPrimitiveError(f"unknown primitive {name!r} (known: {known})") from None

