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
from typing import Any, Callable, ClassVar

from ._params import TrainParams, parse_params
from ._report import LEARNED, EvaluationReport, Peer, Scores, paired_se_key
from ._schema import Schema
from ._split import HoldOut

ENTRY_POINT_GROUP = "aiprim.primitives"
VALIDATION_LOSS = "val/loss"  # what every model logs each epoch; Optuna minimises it


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
    missing = [name for name in (weights_name, meta_name) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"runtime {directory}: {', '.join(missing)} missing (not a folder that "
                                f"export_runtime wrote)")
    with np.load(directory / weights_name, allow_pickle=False) as data:
        weights = {k: data[k] for k in data.files}
    return weights, json.loads((directory / meta_name).read_text())


def mlp_forward(x, weights: list, biases: list):
    """A plain MLP in numpy: Linear, SiLU, ..., Linear (weights as torch stores them, out x in)."""
    import numpy as np

    for i, (w, b) in enumerate(zip(weights, biases)):
        x = x @ w.T + b
        if i < len(weights) - 1:
            x = x / (1.0 + np.exp(-x))
    return x


@dataclass(frozen=True)
class Guardrail:
    """A bound on one metric of the challenger: fixed (``max``/``min``), or the champion's own value."""

    metric: str
    max: float | None = None
    min: float | None = None
    no_worse_than_champion: bool = False
    higher_is_better: bool = False  # direction, for ``no_worse_than_champion``
    tolerance: float = 0.0  # for ``no_worse_than_champion``: a shortfall this small is the metric's noise, not worse
    # For ``no_worse_than_champion``, a shortfall within this many standard errors of the paired per-item
    # difference (the challenger's ``paired_se_key(metric)``, from a scoring of both on the same items) is not
    # worse either: with few items, one item can move the mean past any fixed tolerance.
    noise_se: float = 0.0

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
            shortfall = reference - value if self.higher_is_better else value - reference
            noise = self.noise_se * float(metrics.get(paired_se_key(self.metric)) or 0.0)
            if shortfall > max(self.tolerance, noise):
                if noise > self.tolerance:
                    allowed = f" by more than {noise:.3g} ({self.noise_se:g} standard errors of the paired difference)"
                else:
                    allowed = f" by more than {self.tolerance:g}" if self.tolerance else ""
                return f"{self.metric}={value:.4g} worse than the champion's {reference:.4g}{allowed}"
        return None


class Primitive(abc.ABC):
    """Base class of every learned primitive (see DESIGN.md).

    Declared as data (class attributes): ``name``, ``schema``, ``primary_metric``
    and its direction, ``runtime_class``, ``params_class`` (typed training
    parameters), ``holdout`` (the held-out split), ``peers`` (the classical peers),
    ``manifest_keys`` (keys a snapshot's manifest must carry).

    Abstract: ``generate`` (telemetry), ``build_datamodule`` / ``build_module``
    (learning), ``export_runtime``, ``score`` (candidates and peers on the same
    data) and ``guardrails``. Everything else is an optional hook with a default.
    """

    name: ClassVar[str]
    schema: ClassVar[Schema]
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = False
    runtime_class: ClassVar[type[Runtime]]
    params_class: ClassVar[type[TrainParams]] = TrainParams
    holdout: ClassVar[HoldOut]
    peers: ClassVar[tuple[Peer, ...]] = ()
    manifest_keys: ClassVar[tuple[str, ...]] = ()
    # One paragraph for people (the registered model's page in MLflow): what it replaces, what it decides.
    # Empty: the first paragraph of the primitive's module docstring.
    description: ClassVar[str] = ""
    # On-policy sources (the query optimizer) gather telemetry with the current champion:
    # the snapshot step passes its runtime directory as ``policy_dir`` in the source config.
    on_policy: ClassVar[bool] = False
    # Steps whose results are wall-clock measurements (query latencies, kernel runtimes): the
    # pipeline runs them with the machine to themselves, never beside another branch's training.
    timed_steps: ClassVar[frozenset[str]] = frozenset()
    # Metrics ``aiprim run --rounds`` follows per round beside the primary one (the learned model and the best peer).
    curve_metrics: ClassVar[tuple[str, ...]] = ()

    # --- telemetry -----------------------------------------------------
    @abc.abstractmethod
    def generate(self, config: dict, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Produce telemetry from the embedded source: (tables, extra manifest keys)."""

    def split(self, tables: dict[str, Any], holdout_fraction: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """(train, held-out) by the declared ``holdout``, deterministically."""
        return self.holdout.split(tables, holdout_fraction)

    # --- learning ------------------------------------------------------
    def params(self, raw: dict | None = None, where: str | None = None) -> TrainParams:
        """Typed training parameters from a config's ``train`` section (unknown keys are an error)."""
        return parse_params(self.params_class, raw, where or f"configs/{self.name}.yaml: train")

    @abc.abstractmethod
    def build_datamodule(self, tables: dict[str, Any], params: TrainParams, seed: int):
        """A LightningDataModule over training tables."""

    @abc.abstractmethod
    def build_module(self, datamodule, params: TrainParams):
        """A LightningModule wrapping the primitive's plain nn.Module; it logs ``val/loss`` every epoch."""

    @abc.abstractmethod
    def export_runtime(self, module, datamodule, directory: Path) -> None:
        """Write what the runtime needs as npz + JSON (``save_weights``)."""

    def load_runtime(self, directory: Path) -> Runtime:
        return self.runtime_class.load(Path(directory))

    def train_runtime(self, tables: dict[str, Any], params: TrainParams | dict, directory: Path, seed: int = 0,
                      accelerator: str = "cpu", devices: int | str = 1, strategy: str = "auto") -> Runtime:
        """Train without tracking (on CPU unless told otherwise) and export to ``directory``: for tests, notebooks and benchmarks.

        ``devices=2, strategy="ddp_spawn"`` trains in two processes (DDP; gloo on CPU) and brings the
        weights back to this one. The pipeline's ``aiprim.flows.steps.train`` adds checkpoints, MLflow
        and the configured accelerator, devices and strategy.
        """
        import lightning as L

        from aiprim._console import settle_library_loggers

        settle_library_loggers()  # Lightning installs its own log handler when first imported
        if isinstance(params, dict):
            params = self.params(params, where=f"{self.name} train params")
        L.seed_everything(seed, verbose=False)
        datamodule = self.build_datamodule(tables, params, seed)
        module = self.build_module(datamodule, params)
        trainer = L.Trainer(max_epochs=params.max_epochs, accelerator=accelerator, devices=devices, strategy=strategy, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            gradient_clip_val=1.0)
        trainer.fit(module, datamodule)
        if VALIDATION_LOSS not in trainer.callback_metrics:  # tuning prunes and ranks trials on it
            raise TypeError(f"{self.name}: build_module's LightningModule must log {VALIDATION_LOSS!r} every epoch")
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.export_runtime(module, datamodule, Path(directory))
        return self.load_runtime(Path(directory))

    # --- evaluation ----------------------------------------------------
    @abc.abstractmethod
    def score(self, candidates: dict[str, Runtime], tables: dict[str, Any], config: dict) -> Scores:
        """Score every candidate runtime and, unless ``config["baselines"]`` is false, every declared peer,
        on the same tables in one session.

        ``config`` is the primitive's ``evaluate`` section plus the context: ``baselines``,
        ``manifest``, ``snapshot_dir`` and ``training_tables`` (for peers that learn).
        """

    def evaluate(self, candidates: Runtime | dict[str, Runtime] | None, tables: dict[str, Any], config: dict,
                 models: dict[str, str | None] | None = None) -> EvaluationReport:
        """The learned candidates (one runtime, or several by name) and the peers, one report."""
        if not isinstance(candidates, dict):
            candidates = {} if candidates is None else {LEARNED: candidates}
        config = {"baselines": True, **config}
        scores = self.score(candidates, tables, config)
        undeclared = set(scores.peers) - {p.name for p in self.peers}
        if undeclared:
            raise RuntimeError(f"{self.name}: scored peers {sorted(undeclared)} are not declared in {type(self).__name__}.peers")
        return EvaluationReport(
            primitive=self.name, primary_metric=self.primary_metric, higher_is_better=self.higher_is_better,
            candidates=scores.candidates, baselines=scores.peers,
            reference_baselines=tuple(p.name for p in self.peers if p.reference_only),
            lower_bounds=scores.lower_bounds, details=scores.details, models=dict(models or {}))

    @abc.abstractmethod
    def guardrails(self, config: dict) -> tuple[Guardrail, ...]:
        """Bounds a challenger must respect to be promoted."""

    def evaluation_figures(self, report: EvaluationReport) -> dict:
        """Extra plots of an evaluation report, ``{artifact path: matplotlib figure}``, logged to MLflow."""
        return {}

    def input_example(self, tables: dict[str, Any]):
        """A small input for the logged model's signature (``Runtime.predict_frame``'s input)."""
        return None

    def context_tables(self, tables: dict[str, Any]) -> dict[str, Any]:
        """Tables the logged pyfunc model needs beside its input (the balancer's fleet); none by default."""
        return {}

    def complete_telemetry(self, tables: dict[str, Any], manifest: dict, config: dict) -> tuple[dict, dict] | None:
        """A snapshot imported with ``--source`` that lacks measurements the primitive can gather itself
        (the query optimizer's queries-only log on the user's own database): ``(tables, manifest extras)``
        of the completed snapshot, or None when it is complete. ``config`` is the source section plus
        ``snapshot_dir`` and ``policy_dir`` (the champion's runtime, or None)."""
        return None

    def merge_experience(self, parts: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        """One set of training tables from the training parts of several snapshots, oldest first
        (``(snapshot id, tables)`` each; the pipeline's experience window, ``aiprim.flows.experience``).

        By default, when the hold-out has a ``key`` (rows are independent observations: queries,
        tasks), the held-out table and its linked tables are appended, each older part's keys prefixed
        with its snapshot id so that they never collide; every other table is the newest part's.
        Without a key (one time-ordered trace, as the balancer's) only the newest part is used:
        traces of different rounds do not concatenate into one trace.
        """
        import pandas as pd

        newest = parts[-1][1]
        key = self.holdout.key if self.holdout is not None else None
        if len(parts) == 1 or key is None:
            return newest
        merged = dict(newest)
        for table in (self.holdout.table, *self.holdout.linked):
            frames = []
            for i, (snapshot_id, tables) in enumerate(parts):
                if table not in tables:
                    continue
                frame = tables[table]
                if i < len(parts) - 1:
                    frame = frame.assign(**{key: f"{snapshot_id[:8]}/" + frame[key].astype(str)})
                frames.append(frame)
            merged[table] = pd.concat(frames, ignore_index=True) if frames else newest.get(table)
        return merged

    def config_keys(self, section: str) -> frozenset[str] | None:
        """The keys the ``source`` or ``evaluate`` section of the config may hold; None leaves it unchecked."""
        return None

    # --- transfer (optional: a primitive opts in by overriding both) --------------------------
    def describe_deployment(self, tables: dict[str, Any]):
        """The deployment's descriptor (a 1-d numpy array of fixed length) from a snapshot's tables: measured
        quantities only, never names, so a deployment never seen is described by what it is."""
        raise TransferNotSupported(f"{self.name} does not opt in to transfer (it has no deployment descriptor)")

    def transfer_model(self):
        """The object that maps descriptors to ready runtimes (``fit`` over a population, ``decode``)."""
        raise TransferNotSupported(f"{self.name} does not opt in to transfer (it has no transfer model)")

    @property
    def supports_transfer(self) -> bool:
        return type(self).describe_deployment is not Primitive.describe_deployment

    # --- command line ----------------------------------------------------
    def add_cli_commands(self, subparsers) -> dict[str, Callable]:
        """Primitive-specific ``aiprim`` verbs: add parsers, return ``{command: handler(args) -> exit code}``."""
        return {}

    def add_snapshot_arguments(self, parser) -> None:
        """Extra options of ``aiprim snapshot`` for this primitive's source (the compiler's ``--tasks``)."""

    def source_overrides(self, args) -> dict:
        """Source config entries from the options ``add_snapshot_arguments`` added."""
        return {}


class TransferNotSupported(LookupError):
    """A primitive that does not opt in to the transfer stage."""


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


def _load_builtin_and_entry_points(rescan: bool = False) -> None:
    """Register the built-in primitives, then those of installed distributions (entry point group
    ``aiprim.primitives``); ``rescan`` looks again, for a primitive installed since the first look."""
    global _entry_points_loaded
    if _entry_points_loaded and not rescan:
        return
    _entry_points_loaded = True
    from . import balancer, compiler, query, sharder  # noqa: F401  (register themselves)

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            cls = ep.load()
            if ep.name not in _REGISTRY:  # a class not decorated with @register
                register(cls)
            if _REGISTRY.get(ep.name) is not cls:
                raise ValueError(f"entry point {ep.name!r} ({ep.value}) names a primitive called {cls.name!r}")


def names() -> list[str]:
    _load_builtin_and_entry_points()
    return sorted(_REGISTRY)


def get(name: str) -> Primitive:
    _load_builtin_and_entry_points()
    if name not in _REGISTRY:
        _load_builtin_and_entry_points(rescan=True)
    try:
        return _REGISTRY[name]()
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownPrimitiveError(f"unknown primitive {name!r} (known: {known})") from None
