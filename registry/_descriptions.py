"""What the MLflow model pages say: a registered model's description and each version's.

The model's says what the primitive replaces and how it is judged (its primary
metric and that metric's direction); a version's compares it with the best
classical peer (and the champion, when one was scored beside it) on the same
held-out data, and records the promotion decision. MLflow renders both as
markdown on the model and version pages.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

MAX_METRIC_ROWS = 12  # a version page is read, not searched: the primary metric and the next few


def primitive_summary(primitive) -> str:
    """The primitive's one-paragraph ``description``, else the first paragraph of its module's docstring."""
    text = getattr(primitive, "description", "") or ""
    if not text.strip():
        module = sys.modules.get(type(primitive).__module__)
        text = ((module.__doc__ if module else None) or type(primitive).__doc__ or "").strip().split("\n\n")[0]
    return " ".join(text.split())


def direction(higher_is_better: bool) -> str:
    return "higher is better" if higher_is_better else "lower is better"


def model_description(primitive) -> str:
    from ._store import model_name

    summary = primitive_summary(primitive) or f"The learned {primitive.name} primitive."
    return (f"**{model_name(primitive.name)}**: {summary}\n\n"
            f"Primary metric: `{primitive.primary_metric}` ({direction(primitive.higher_is_better)}), scored on the "
            f"held-out newest part of a snapshot beside the classical peers. "
            f"Alias `champion` is what `load_runtime(\"{primitive.name}\")` serves; `challenger` is the newest candidate.")


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _numeric(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def version_description(report, decision=None, version: str | None = None) -> str:
    """A version's page: its metrics against the best classical peer (and the champion scored beside
    it), as a markdown table, then the promotion decision (pending until the policy has decided)."""
    from ..primitives._report import CHAMPION_CANDIDATE

    metric = report.primary_metric
    columns = [("this version", _numeric(report.metrics))]
    champion = report.candidates.get(CHAMPION_CANDIDATE)
    if champion is not None:
        champion_version = report.models.get(CHAMPION_CANDIDATE)
        columns.append((f"champion (v{champion_version})" if champion_version else "champion", _numeric(champion)))
    best = report.best_baseline()
    if best is not None:
        columns.append((f"best classical peer: {best[0]}", _numeric(report.baselines[best[0]])))
    names = [metric] if metric in columns[0][1] else []
    names += sorted(k for k in columns[0][1] if k != metric)[:MAX_METRIC_ROWS - len(names)]
    lines = []
    where = f" on `{Path(report.snapshot).name}`" if report.snapshot else ""
    part = f" ({report.part})" if report.part else ""
    lines.append(f"{'Version ' + str(version) if version else 'This version'}, evaluated{where}{part}; "
                 f"`{metric}` is primary ({direction(report.higher_is_better)}).")
    lines.append("")
    lines.append("| metric | " + " | ".join(title for title, _ in columns) + " |")
    lines.append("| --- |" + " ---: |" * len(columns))
    for name in names:
        label = f"**{name}** (primary)" if name == metric else name
        lines.append(f"| {label} | " + " | ".join(_number(values.get(name)) for _, values in columns) + " |")
    if best is None:
        lines.append("")
        lines.append("No deployable classical peer was scored on the primary metric.")
    lines.append("")
    lines.append(promotion_line(decision))
    return "\n".join(lines)


def promotion_line(decision) -> str:
    if decision is None:
        return "**Promotion**: pending (the policy has not decided yet)."
    verdict = "promoted to champion" if decision.promoted else "not promoted"
    deployment = getattr(decision, "deployment", None)
    scope = f" of deployment `{deployment}`" if deployment and deployment != "default" else ""
    return f"**Promotion**: {verdict}{scope}: {decision.reason}."


def describe_model(client, primitive) -> None:
    """Write the registered model's description (kept current: the text follows the code)."""
    from ._store import model_name

    text = model_description(primitive)
    if (client.get_registered_model(model_name(primitive.name)).description or "") != text:
        client.update_registered_model(model_name(primitive.name), description=text)


def describe_registration(client, primitive, version: str, report=None) -> None:
    """A new version: the model's description, and the version's (promotion pending) when it was evaluated."""
    describe_model(client, primitive)
    if report is not None:
        describe_version(client, primitive.name, version, report)


def describe_version(client, primitive_name: str, version: str, report, decision=None) -> None:
    from ._store import model_name

    client.update_model_version(model_name(primitive_name), str(version),
                                description=version_description(report, decision, str(version)))
