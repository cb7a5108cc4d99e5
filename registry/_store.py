"""Where MLflow keeps runs and models: SQLite in the project folder by default."""

from __future__ import annotations

import threading
from pathlib import Path

from .. import settings

MODEL_PREFIX = "aiprim-"


def model_name(primitive: str) -> str:
    return MODEL_PREFIX + primitive


_configured: dict[str, str | None] = {"tracking_uri": None, "artifacts": None}


def use_store(tracking_uri: str | None, artifacts: str | None) -> None:
    """Point aiprim at the pipeline's configured store (``MLFLOW_TRACKING_URI`` still wins).

    Relative locations stay relative: they resolve against the project folder each time
    they are used, so a later change of ``AIPRIM_HOME`` is followed."""
    _configured.update(tracking_uri=tracking_uri, artifacts=artifacts)


def _settings() -> tuple[str, str]:
    return settings.tracking_uri(_configured["tracking_uri"]), settings.artifact_root(_configured["artifacts"])


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

    from .._console import settle_library_loggers

    # MLflow prints its events ("Created version ...", "View run ...") straight to stderr until its stream is
    # brought under the command's console; every use of the store passes here, trained in this process or not.
    settle_library_loggers()
    uri, _ = _settings()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with _store_lock:
        if uri not in _stores_ready:
            if uri.startswith(("http://", "https://")):
                require_answer(uri)
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
            _stores_ready.add(uri)
    return client


class StoreUnavailable(ConnectionError):
    """The tracking server does not accept connections."""


# How long a tracking server that refuses connections gets to come up (a restart) before that is an error.
ANSWER_WAIT_S = 10.0


def require_answer(uri: str) -> None:
    """Return once ``uri``'s host accepts a connection; else ``StoreUnavailable`` within ``ANSWER_WAIT_S``.

    MLflow's client retries a refused connection seven times with exponential backoff: a server that is not
    there cost `aiprim.load_runtime` and `aiprim status` four silent minutes before any error. Behind an HTTP
    proxy the host is not ours to reach, so the client's own handling applies.
    """
    import socket
    import time
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if not parts.hostname or (urllib.request.getproxies() and not urllib.request.proxy_bypass(parts.hostname)):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + ANSWER_WAIT_S
    while True:
        try:
            with socket.create_connection((parts.hostname, port), timeout=3):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise StoreUnavailable(
                    f"the MLflow tracking server {settings.shown_url(uri)} does not answer ({error.strerror or error}); "
                    "start it, or point MLFLOW_TRACKING_URI at one that runs") from None
            time.sleep(1.0)


def experiment(primitive: str) -> str:
    """Create (once) and activate the primitive's experiment; returns its id."""
    import mlflow

    uri, artifacts = _settings()
    name = model_name(primitive)
    found = mlflow.get_experiment_by_name(name)
    if found is None:
        location = f"{artifacts}/{name}" if "://" in artifacts else (Path(artifacts) / name).resolve().as_uri()
        if uri.startswith(("http://", "https://")):
            location = None  # a tracking server decides where artifacts go (proxied: mlflow-artifacts:/)
        try:
            mlflow.create_experiment(name, artifact_location=location)
        except Exception:  # created concurrently by another branch
            pass
    return mlflow.set_experiment(name).experiment_id
