"""Deployments in the registry: one registered model per primitive, one pair of aliases per deployment.

A deployment is one system a primitive serves (a fleet, a database, a
machine). Every version records the deployment it was trained for (tag
``aiprim.deployment``); deployment ``default`` is served by the aliases
``champion`` / ``challenger``, any other deployment NAME by ``champion-NAME``
/ ``challenger-NAME``. So moving an alias by hand in the MLflow UI is still a
promotion, per deployment, and versions of every deployment share one history
of version numbers.
"""

from __future__ import annotations

import re

DEFAULT_DEPLOYMENT = "default"
DEPLOYMENT_TAG = "aiprim.deployment"
# Alias-safe (MLflow allows [A-Za-z0-9_-]) and readable in a file name.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class DeploymentError(ValueError):
    pass


def check_deployment(name: str | None) -> str:
    """The deployment's name (``default`` for None), or a DeploymentError naming what is wrong with it."""
    if name is None:
        return DEFAULT_DEPLOYMENT
    if not isinstance(name, str) or not _NAME.match(name):
        raise DeploymentError(f"deployment {name!r}: use 1 to 63 lower-case letters, digits, '-' or '_', "
                              "starting with a letter or digit")
    return name


def deployment_alias(alias: str, deployment: str | None) -> str:
    """The registry alias serving ``alias`` (champion, challenger) for a deployment."""
    deployment = check_deployment(deployment)
    return alias if deployment == DEFAULT_DEPLOYMENT else f"{alias}-{deployment}"


def history_tag(base: str, deployment: str | None) -> str:
    deployment = check_deployment(deployment)
    return base if deployment == DEFAULT_DEPLOYMENT else f"{base}.{deployment}"


def manifest_deployment(manifest: dict) -> str:
    """The deployment a snapshot's manifest names (``default`` when it names none)."""
    return check_deployment(manifest.get("deployment") or DEFAULT_DEPLOYMENT)


def known_deployments(client, primitive: str) -> list[str]:
    """Deployments with at least one registered version of the primitive (``default`` first when present)."""
    from ._store import model_name

    found = set()
    for mv in client.search_model_versions(f"name='{model_name(primitive)}'"):
        found.add(mv.tags.get(DEPLOYMENT_TAG, DEFAULT_DEPLOYMENT))
    return sorted(found, key=lambda d: (d != DEFAULT_DEPLOYMENT, d))
