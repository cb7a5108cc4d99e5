"""Model registry access: load a primitive's runtime by alias, promote, roll back.

>>> from aiprim.registry import load_runtime
>>> balancer = load_runtime("balancer")          # alias "champion" by default
>>> balancer = load_runtime("balancer", deployment="eu-west")   # that deployment's champion
>>> server_ids = balancer.route(requests_df, servers_df)

Loading imports MLflow's client and the primitive's runtime module only:
never Prefect or Lightning.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ._deployments import DEFAULT_DEPLOYMENT, DeploymentError, check_deployment, deployment_alias, known_deployments
from ._promotion import CHALLENGER, CHAMPION, Decision, PromotionError, promote_version, rollback
from ._store import StoreUnavailable, configure, model_name, tracking_uri

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_DEPLOYMENT",
    "Decision",
    "DeploymentError",
    "ModelNotFoundError",
    "PromotionError",
    "RuntimeDamaged",
    "StoreUnavailable",
    "load_runtime",
    "model_name",
    "promote_version",
    "resolve_model",
    "rollback",
]

RUNTIME_ARTIFACT = "runtime"


class ModelNotFoundError(LookupError):
    pass


class RuntimeDamaged(ValueError):
    """A model's runtime files do not load (damaged in the artifact store, or written by something else)."""


def resolve_model(primitive: str, ref: str = CHAMPION, deployment: str | None = None) -> tuple[str, str | None]:
    """(run id, version) for an alias, a version number or a run id.

    ``champion`` and ``challenger`` name the deployment's own (``champion-NAME`` for deployment NAME);
    a deployment no version was trained for is a ModelNotFoundError naming the known ones."""
    from mlflow.exceptions import MlflowException

    client = configure()
    name = model_name(primitive)
    deployment = check_deployment(deployment)
    if ref in (CHAMPION, CHALLENGER):
        ref = deployment_alias(ref, deployment)
    try:
        if ref.isdigit():
            mv = client.get_model_version(name, ref)
        elif len(ref) == 32 and all(c in "0123456789abcdef" for c in ref):
            return ref, None
        else:
            mv = client.get_model_version_by_alias(name, ref)
    except MlflowException:
        try:
            known = known_deployments(client, primitive)
        except MlflowException:
            known = []
        if deployment != DEFAULT_DEPLOYMENT and deployment not in known:
            raise ModelNotFoundError(f"{name} has no deployment {deployment!r} (known: {', '.join(known) or 'none'})") from None
        if ref.isdigit():
            raise ModelNotFoundError(f"{name} has no version {ref}") from None
        aliases = _aliases(client, name)
        if aliases and ref not in (deployment_alias(CHAMPION, deployment), deployment_alias(CHALLENGER, deployment)):
            raise ModelNotFoundError(f"{name} has no alias {ref!r} (its aliases: {', '.join(sorted(aliases))}; or give a "
                                     f"version number or a run id)") from None
        others = [d for d in known if d != deployment]
        hint = f"; other deployments have models: {', '.join(others)} (name one with --deployment)" if others else ""
        raise ModelNotFoundError(f"{name} has no model {ref!r} (train one with `aiprim run` or `aiprim train`){hint}") from None
    return mv.run_id, str(mv.version)


def _aliases(client, name: str) -> dict:
    """The registered model's aliases (alias -> version); none where the model itself is missing."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(name).aliases or {})
    except MlflowException:
        return {}


def runtime_dir(primitive: str, ref: str = CHAMPION, deployment: str | None = None) -> Path:
    """Local directory with the runtime files of a model (downloaded once per run, atomically)."""
    return _downloaded(resolve_model(primitive, ref, deployment)[0])


@contextlib.contextmanager
def _quiet_download():
    """MLflow draws a progress bar on stderr for every download; a runtime is a few small files, fetched by
    a library call inside the user's own program, where a bar is noise. Unless the user set MLflow's switch."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if name in os.environ:
        yield
        return
    os.environ[name] = "false"
    try:
        yield
    finally:
        os.environ.pop(name, None)


def _downloaded(run_id: str) -> Path:
    """The run's runtime files in the local cache, downloaded there first if missing."""
    import shutil
    import tempfile

    from mlflow.artifacts import download_artifacts

    from ..settings import cache_dir

    target = cache_dir() / run_id
    if not (target / RUNTIME_ARTIFACT).exists():
        target.mkdir(parents=True, exist_ok=True)
        # Downloaded beside, then renamed into place: an interrupted download never looks complete.
        staging = Path(tempfile.mkdtemp(dir=target))
        try:
            with _quiet_download():
                download_artifacts(run_id=run_id, artifact_path=RUNTIME_ARTIFACT, dst_path=str(staging),
                                   tracking_uri=tracking_uri())
            try:
                (staging / RUNTIME_ARTIFACT).rename(target / RUNTIME_ARTIFACT)
            except OSError:  # another process got there first, with the same files
                pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / RUNTIME_ARTIFACT


def load_runtime(name: str, alias: str = CHAMPION, deployment: str | None = None):
    """The runtime of a primitive's model by alias (or version number, or run id); ``champion`` and
    ``challenger`` are those of ``deployment`` (``default`` when None).

    A local copy that does not load is fetched again once (the registry's may be whole); if that copy does
    not load either, RuntimeDamaged names the model and the file's error in one line."""
    import shutil

    from aiprim import primitives

    prim = primitives.get(name)
    run_id, version = resolve_model(name, alias, deployment)
    for attempt in (1, 2):
        directory = _downloaded(run_id)
        try:
            return prim.load_runtime(directory)
        except Exception as error:  # noqa: BLE001  (whatever a damaged file raises: numpy, zipfile, json, KeyError)
            if attempt == 2:
                which = f"version {version}" if version else f"run {run_id}"
                if alias not in (version, run_id):
                    which = f"{alias} ({which})"
                reason = (str(error).strip().splitlines() or [""])[0]
                raise RuntimeDamaged(f"{model_name(name)} {which}: its runtime files do not load "
                                     f"({type(error).__name__}: {reason}); the artifact store's copy is damaged, "
                                     f"retrain or promote another version") from None
            shutil.rmtree(directory.parent, ignore_errors=True)  # the cached copy, fetched again below
