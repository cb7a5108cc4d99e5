"""Where MLflow keeps runs and models: SQLite in the project folder by default."""

from __future__ import annotations

import os
import threading
from pathlib import Path

MODEL_PREFIX = "aiprim-"


def model_name(primitive: str) -> str:
    return MODEL_PREFIX + primitive


def _settings() -> tuple[str, Path]:
    # Imported lazily so that loading a runtime does not need the flows package's YAML config.
    from flows import config

    cfg = config.load()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or config.resolve_uri(cfg["mlflow"]["tracking_uri"])
    artifacts = Path(cfg["mlflow"]["artifact_location"])
    return uri, artifacts if artifacts.is_absolute() else config.home() / artifacts


def tracking_uri() -> str:
    return _settings()[0]


_store_lock = threading.Lock()
_stores_ready: set[str] = set()


def configure():
    """Point MLflow's fluent API and registry at the project's store; returns a client.

    The first use of a store creates its schema; two pipeline branches doing that at
    once race on SQLite ("table alembic_version already exists"), so it happens once, under a lock.
    """
    import mlflow
    from mlflow import MlflowClient

    uri, _ = _settings()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with _store_lock:
        if uri not in _stores_ready:
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
            _stores_ready.add(uri)
    return client


def experiment(primitive: str) -> str:
    """Create (once) and activate the primitive's experiment; returns its id."""
    import mlflow

    uri, artifacts = _settings()
    name = model_name(primitive)
    found = mlflow.get_experiment_by_name(name)
    if found is None:
        location = (artifacts / name).resolve().as_uri() if "://" not in str(artifacts) else f"{artifacts}/{name}"
        try:
            mlflow.create_experiment(name, artifact_location=location)
        except Exception:  # created concurrently by another branch
            pass
    return mlflow.set_experiment(name).experiment_id
