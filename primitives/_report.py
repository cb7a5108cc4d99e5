"""Peers and the one evaluation report every primitive returns.

A primitive declares its classical peers (``Peer``) and scores its learned
candidates and those peers on the same held-out data in one session
(``Primitive.score``); the base class turns that into an
``EvaluationReport``, which the comparison plot, the promotion policy,
``aiprim status`` and ``aiprim evaluate --json`` all read. Scoring the
challenger and the champion in the same session matters for primitives
measured live (the query optimizer): two timing sessions on a machine whose
load varies differ by more than a promotion margin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LEARNED, CHAMPION_CANDIDATE = "learned", "champion"


def paired_se_key(metric: str) -> str:
    """The challenger's metric holding the standard error of its per-item difference from the champion's
    ``metric``, where a score computed both on the same items (read by ``Guardrail.noise_se``)."""
    return f"{metric}_paired_se"


@dataclass(frozen=True)
class Peer:
    """A classical peer the learned primitive is scored beside.

    ``reference_only`` peers are reported but not deployable (a per-query
    oracle that knows every latency in hindsight): no version must beat them.
    """

    name: str
    description: str = ""
    reference_only: bool = False


@dataclass
class Scores:
    """What ``Primitive.score`` returns: metrics per learned candidate and per peer, on the same data."""

    candidates: dict[str, dict[str, Any]]
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)
    lower_bounds: dict[str, float] = field(default_factory=dict)  # metric -> the best any policy can reach
    details: dict[str, Any] = field(default_factory=dict)  # per-query / per-task rows, for people and plots


@dataclass
class EvaluationReport(Mapping):
    """One evaluation: learned candidates and peers on one held-out part, with the metric's direction.

    It reads as its JSON form too (``report["metrics"]``, ``json.dumps(dict(report))``):
    ``{"primitive", "model", "snapshot", "part", "primary_metric", "higher_is_better",
    "metrics", "baselines", "candidates", "reference_baselines", "lower_bounds", ...details}``.
    """

    primitive: str
    primary_metric: str
    higher_is_better: bool
    candidates: dict[str, dict[str, Any]]
    baselines: dict[str, dict[str, Any]]
    reference_baselines: tuple[str, ...] = ()
    lower_bounds: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    models: dict[str, str | None] = field(default_factory=dict)  # candidate -> the model it is (run id, version)
    snapshot: str | None = None
    part: str | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        """The learned challenger's metrics (empty when only peers were scored)."""
        return self.candidates.get(LEARNED, {})

    @property
    def model(self) -> str | None:
        return self.models.get(LEARNED)

    def primary(self, candidate: str = LEARNED) -> float | None:
        return self.candidates.get(candidate, {}).get(self.primary_metric)

    def better(self, a: float, b: float, margin: float = 0.0) -> bool:
        """Whether metric value ``a`` beats ``b`` by a relative margin, in the metric's direction."""
        if self.higher_is_better:
            return a > b * (1.0 + margin)
        return a < b * (1.0 - margin)

    def best_baseline(self) -> tuple[str, float] | None:
        """The best deployable peer on the primary metric (reference-only peers never count)."""
        scored = [(n, m[self.primary_metric]) for n, m in self.baselines.items()
                  if self.primary_metric in m and n not in self.reference_baselines]
        if not scored:
            return None
        return (max if self.higher_is_better else min)(scored, key=lambda item: item[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "primitive": self.primitive, "model": self.model, "snapshot": self.snapshot, "part": self.part,
            "primary_metric": self.primary_metric, "higher_is_better": self.higher_is_better,
            "metrics": self.metrics, "baselines": self.baselines, "candidates": self.candidates, "models": self.models,
            "reference_baselines": list(self.reference_baselines), "lower_bounds": self.lower_bounds,
            **self.details,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "EvaluationReport":
        known = {"primitive", "model", "snapshot", "part", "primary_metric", "higher_is_better", "metrics", "baselines",
                 "candidates", "models", "reference_baselines", "lower_bounds"}
        candidates = dict(data.get("candidates") or ({LEARNED: data["metrics"]} if data.get("metrics") else {}))
        return cls(primitive=data["primitive"], primary_metric=data["primary_metric"],
                   higher_is_better=bool(data["higher_is_better"]), candidates=candidates,
                   baselines=dict(data.get("baselines", {})), reference_baselines=tuple(data.get("reference_baselines", ())),
                   lower_bounds=dict(data.get("lower_bounds", {})),
                   details={k: v for k, v in data.items() if k not in known},
                   models=dict(data.get("models") or {LEARNED: data.get("model")}),
                   snapshot=data.get("snapshot"), part=data.get("part"))

    # Mapping: the JSON form, for readers that want the report as data.
    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())
