"""``aiprim run --rounds R``: the primary metric against the round number, the curve of a primitive that
should get better with every round of its own telemetry.

Each round is one run of the retrain flow: a new snapshot (new work: the seed moves with the round),
validated, trained on the experience window, scored beside the peers on that round's held-out data.
The curve goes to ``<outputs>/rounds/<primitive>.{json,png}`` and to an MLflow run ``rounds-<primitive>``
(metrics ``rounds/<candidate>/<metric>`` with the round as step).
"""

from __future__ import annotations

import json
from pathlib import Path

from . import config as cfgmod


def curve_points(name: str, results: list[dict]) -> list[dict]:
    """One point per round that evaluated: the round, the challenger's and the best peer's primary metric."""
    from aiprim import primitives
    from aiprim.primitives._report import EvaluationReport
    from aiprim.primitives._snapshot import read_manifest

    prim = primitives.get(name)
    points = []
    for result in results:
        if not result.get("report"):
            continue
        report = EvaluationReport.from_dict(result["report"])
        best = report.best_baseline()
        point = {"round": int(read_manifest(Path(result["snapshot"])).get("round", len(points))),
                 "snapshot": Path(result["snapshot"]).name, "version": result.get("version"),
                 "promoted": bool((result.get("decision") or {}).get("promoted")),
                 "learned": report.metrics.get(prim.primary_metric),
                 "best_peer": best[0] if best else None, "best_peer_value": best[1] if best else None,
                 "lower_bound": report.lower_bounds.get(prim.primary_metric)}
        points.append(point)
    return points


def record(name: str, results: list[dict], cfg: dict) -> dict:
    """Write the curve (JSON and a plot) and log it to MLflow; returns {"points", "json", "plot"}."""
    import mlflow

    from aiprim import primitives
    from aiprim.registry._store import configure, experiment

    prim = primitives.get(name)
    points = curve_points(name, results)
    folder = cfgmod.path(cfg, "outputs") / "rounds"
    folder.mkdir(parents=True, exist_ok=True)
    json_path, plot_path = folder / f"{name}.json", folder / f"{name}.png"
    json_path.write_text(json.dumps({"primitive": name, "metric": prim.primary_metric,
                                     "higher_is_better": prim.higher_is_better, "points": points}, indent=2) + "\n")
    figure = _plot(prim, points)
    figure.savefig(plot_path, dpi=110)
    configure()
    experiment(name)
    with mlflow.start_run(run_name=f"rounds-{name}", tags={"aiprim.primitive": name, "aiprim.step": "rounds"}):
        for p in points:
            for key in ("learned", "best_peer_value", "lower_bound"):
                if p[key] is not None:
                    mlflow.log_metric(f"rounds/{key}/{prim.primary_metric}", p[key], step=p["round"])
        mlflow.log_figure(figure, "plots/rounds.png")
        mlflow.log_dict({"points": points}, "rounds.json")
    return {"points": points, "json": str(json_path), "plot": str(plot_path)}


def _plot(prim, points: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    rounds = [p["round"] for p in points]
    ax.plot(rounds, [p["learned"] for p in points], "o-", color="tab:blue", label="learned (challenger)")
    peers = [(p["round"], p["best_peer_value"]) for p in points if p["best_peer_value"] is not None]
    if peers:
        ax.plot(*zip(*peers), "s--", color="tab:gray", label="best classical peer")
    bounds = [(p["round"], p["lower_bound"]) for p in points if p["lower_bound"] is not None]
    if bounds:
        ax.plot(*zip(*bounds), ":", color="tab:red", label="lower bound")
    ax.set_xlabel("round")
    ax.set_ylabel(prim.primary_metric + (" (higher is better)" if prim.higher_is_better else " (lower is better)"))
    ax.set_title(f"{prim.name}: held-out {prim.primary_metric} per round")
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def print_curve(name: str, points: list[dict]) -> None:
    print(f"\n{name}: primary metric per round (held-out data of that round)")
    print(f"{'round':>5} {'learned':>9} {'best peer':>26} {'bound':>8}  promoted")
    for p in points:
        peer = f"{p['best_peer']} {p['best_peer_value']:.3f}" if p["best_peer"] else "-"
        bound = f"{p['lower_bound']:.3f}" if p["lower_bound"] is not None else "-"
        learned = f"{p['learned']:.3f}" if p["learned"] is not None else "-"
        print(f"{p['round']:>5} {learned:>9} {peer:>26} {bound:>8}  {'yes' if p['promoted'] else 'no'}")
