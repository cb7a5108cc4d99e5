"""The promotion policy and the alias moves it makes.

The ``champion`` alias is the single source of truth for what serves: a
manual move in the MLflow UI is honoured because the loader reads the alias
and nothing else. Every move made here happens under a file lock per model,
so two promotions racing cannot interleave their read-decide-write, and the
registry itself allows one version per alias, so there is never a second
champion. Versions are never deleted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .._locks import exclusive
from ..settings import state_dir
from ._deployments import DEFAULT_DEPLOYMENT, DEPLOYMENT_TAG, deployment_alias, history_tag
from ._store import configure, model_name

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "aiprim.champion_history"


@dataclass
class Decision:
    primitive: str
    version: str
    promoted: bool
    reason: str
    previous_champion: str | None = None
    challenger_metric: float | None = None
    reference_metric: float | None = None
    broken_guardrails: list[str] = field(default_factory=list)
    deployment: str = DEFAULT_DEPLOYMENT

    def to_dict(self) -> dict:
        return asdict(self)


class PromotionError(ValueError):
    pass


def model_lock(primitive: str):
    """Held while one process decides on and moves the primitive's aliases."""
    return exclusive(state_dir() / f"{model_name(primitive)}.lock")


def alias_version(client, primitive: str, alias: str, deployment: str | None = None) -> str | None:
    """The version holding ``alias`` (champion, challenger) for the deployment (``default`` when None)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name(primitive), deployment_alias(alias, deployment)).version)
    except MlflowException:
        return None


def version_deployment(client, primitive: str, version: str) -> str:
    """The deployment a registered version was trained for (``default`` for versions that name none)."""
    return client.get_model_version(model_name(primitive), str(version)).tags.get(DEPLOYMENT_TAG, DEFAULT_DEPLOYMENT)


def _history(client, primitive: str, deployment: str | None = None) -> list[str]:
    model = client.get_registered_model(model_name(primitive))
    return json.loads(model.tags.get(history_tag(HISTORY_TAG, deployment), "[]"))


def _set_champion(client, primitive: str, version: str, deployment: str | None = None) -> str | None:
    name = model_name(primitive)
    previous = alias_version(client, primitive, CHAMPION, deployment)
    if previous == version:
        return previous
    client.set_registered_model_alias(name, deployment_alias(CHAMPION, deployment), version)
    history = _history(client, primitive, deployment)
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)  # a champion set by hand in the UI is remembered too
    history.append(version)
    client.set_registered_model_tag(name, history_tag(HISTORY_TAG, deployment), json.dumps(history[-50:]))
    return previous


def decide(primitive_obj, report, guardrails, margin: float, version: str, has_champion: bool = False) -> Decision:
    """Pure policy over one evaluation report: the challenger (candidate ``learned``) against the
    champion scored beside it (candidate ``champion``), or, before the first champion, the best
    deployable classical peer. Guardrails are checked first; the margin applies against a champion."""
    from ..primitives._report import CHAMPION_CANDIDATE, LEARNED

    metric = report.primary_metric
    challenger = report.candidates.get(LEARNED, {})
    champion = report.candidates.get(CHAMPION_CANDIDATE)
    broken = [b for g in guardrails if (b := g.broken_by(challenger, champion))]
    value = challenger.get(metric)
    decision = Decision(primitive_obj.name, version, False, "", challenger_metric=value, broken_guardrails=broken)
    if value is None:
        decision.reason = f"the challenger has no {metric}"
        return decision
    if broken:
        decision.reason = "guardrail broken: " + "; ".join(broken)
        return decision
    if champion is None:
        if has_champion:
            decision.reason = "the champion serves this same model"
            return decision
        best = report.best_baseline()
        if best is None:
            decision.reason = f"no champion yet and no classical peer scored on {metric}"
            return decision
        peer, peer_value = best
        decision.reference_metric = peer_value
        decision.promoted = report.better(value, peer_value)
        decision.reason = f"no champion yet; {metric} {value:.4g} vs best classical peer {peer} {peer_value:.4g}"
        if not decision.promoted and (peer_breaks := _bounds_broken(guardrails, report.baselines[peer])):
            # The bar stays the best peer whatever it breaks (a partitioner that re-shuffles on a new shard is
            # still what a DBA runs today), but a refusal by a peer outside the challenger's own bounds says so.
            decision.reason += f" (the peer itself breaks {'; '.join(peer_breaks)})"
        return decision
    reference = champion.get(metric)
    decision.reference_metric = reference
    decision.promoted = report.better(value, reference, margin)
    decision.reason = f"{metric} {value:.4g} vs champion {reference:.4g}, scored side by side (margin {margin:.0%})"
    return decision


def _bounds_broken(guardrails, metrics: dict) -> list[str]:
    """The fixed bounds (``max``/``min``) that ``metrics`` breaks, among the metrics it has."""
    return [broken for g in guardrails
            if (g.max is not None or g.min is not None) and g.metric in metrics and (broken := g.broken_by(metrics))]


def apply(decision: Decision) -> Decision:
    """Record a decision on the version and move the aliases (call under ``model_lock``)."""
    client = configure()
    name = model_name(decision.primitive)
    client.set_model_version_tag(name, decision.version, "aiprim.decision", decision.reason[:500])
    if decision.promoted:
        decision.previous_champion = _set_champion(client, decision.primitive, decision.version, decision.deployment)
        if alias_version(client, decision.primitive, CHALLENGER, decision.deployment) == decision.version:
            client.delete_registered_model_alias(name, deployment_alias(CHALLENGER, decision.deployment))
    return decision


def promote_version(primitive: str, version: str, deployment: str | None = None) -> Decision:
    """Make a version champion by hand (as moving the alias in the MLflow UI does), for the deployment
    it was trained for unless ``deployment`` names another."""
    client = configure()
    with model_lock(primitive):
        try:
            recorded = version_deployment(client, primitive, str(version))
        except Exception:
            raise PromotionError(f"{model_name(primitive)} has no version {version}") from None
        deployment = deployment or recorded
        previous = _set_champion(client, primitive, str(version), deployment)
    return Decision(primitive, str(version), True, "promoted by hand", previous_champion=previous, deployment=deployment)


def rollback(primitive: str, deployment: str | None = None) -> Decision:
    """Move the deployment's champion alias back to the champion before the current one."""
    client = configure()
    name = model_name(primitive)
    where = "" if deployment in (None, DEFAULT_DEPLOYMENT) else f" for deployment {deployment!r}"
    with model_lock(primitive):
        current = alias_version(client, primitive, CHAMPION, deployment)
        if current is None:
            raise PromotionError(f"{name} has no champion{where} to roll back")
        history = [v for v in _history(client, primitive, deployment)]
        while history and history[-1] == current:
            history.pop()
        if not history:
            raise PromotionError(f"{name}: no earlier champion{where} than version {current}")
        target = history[-1]
        client.set_registered_model_alias(name, deployment_alias(CHAMPION, deployment), target)
        client.set_registered_model_tag(name, history_tag(HISTORY_TAG, deployment), json.dumps(history))
    return Decision(primitive, target, True, f"rolled back from version {current}", previous_champion=current,
                    deployment=deployment or DEFAULT_DEPLOYMENT)
