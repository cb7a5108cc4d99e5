"""``aiprim run --rounds R``: the primary metric against the round number, the curve of a primitive that
should get better with every round of its own telemetry.

Each round is one run of the retrain flow: a new snapshot (new work: the seed moves with the round),
validated, trained on the experience window, scored beside the peers on that round's held-out data.
The curve goes to ``<outputs>/rounds/<primitive>.{json,png}`` and to an MLflow run ``rounds-<primitive>``
(metrics ``rounds/<candidate>/<metric>`` with the round as step). Beside the primary metric it follows the
primitive's ``curve_metrics`` (the compiler's top-1 and MAPE), for the learned model and the same best peer.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import config as cfgmod


def followed_metrics(prim) -> tuple[str, ...]:
    """The primary metric, then the primitive's ``curve_metrics``."""
    return (prim.primary_metric,) + tuple(m for m in prim.curve_metrics if m != prim.primary_metric)


def curve_points(name: str, results: list[dict]) -> list[dict]:
    """One point per round that evaluated: the round, the challenger's and the best peer's primary metric, and
    under ``metrics`` every followed metric of both (the best peer is the one best on the primary metric)."""
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
                 "lower_bound": report.lower_bounds.get(prim.primary_metric),
                 "metrics": {m: {"learned": report.metrics.get(m),
                                 "best_peer": report.baselines.get(best[0], {}).get(m) if best else None}
                             for m in followed_metrics(prim)}}
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
            if p["lower_bound"] is not None:
                mlflow.log_metric(f"rounds/lower_bound/{prim.primary_metric}", p["lower_bound"], step=p["round"])
            for metric, values in p["metrics"].items():
                for key, label in (("learned", "learned"), ("best_peer", "best_peer_value")):
                    if values[key] is not None:
                        mlflow.log_metric(f"rounds/{label}/{metric}", values[key], step=p["round"])
        mlflow.log_figure(figure, "plots/rounds.png")
        mlflow.log_dict({"points": points}, "rounds.json")
    return {"points": points, "json": str(json_path), "plot": str(plot_path)}


def _plot(prim, points: list[dict]):
    """One panel per followed metric: the learned model, the best peer and (primary metric) the lower bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    metrics = followed_metrics(prim)
    names = sorted({p["best_peer"] for p in points if p["best_peer"]})
    peer_label = f"best classical peer ({', '.join(names)})" if names else "best classical peer"
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 if len(metrics) == 1 else 4.2 * len(metrics), 3.5),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        learned = [(p["round"], p["metrics"][metric]["learned"]) for p in points if p["metrics"][metric]["learned"] is not None]
        peers = [(p["round"], p["metrics"][metric]["best_peer"]) for p in points if p["metrics"][metric]["best_peer"] is not None]
        if learned:
            ax.plot(*zip(*learned), "o-", color="tab:blue", label="learned (challenger)")
        if peers:
            ax.plot(*zip(*peers), "s--", color="tab:gray", label=peer_label)
        bounds = [(p["round"], p["lower_bound"]) for p in points if p["lower_bound"] is not None]
        if metric == prim.primary_metric and bounds:
            ax.plot(*zip(*bounds), ":", color="tab:red", label="lower bound")
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        direction = "" if metric != prim.primary_metric else (" (higher is better)" if prim.higher_is_better else " (lower is better)")
        ax.set_ylabel(metric + direction)
        ax.set_title(f"{prim.name}: held-out {metric}")
        ax.legend(fontsize="small")
    fig.tight_layout()
    plt.close(fig)
    return fig


def print_curve(name: str, points: list[dict]) -> None:
    from aiprim import primitives

    metrics = followed_metrics(primitives.get(name))
    print(f"\n{name}: per round, on that round's held-out data (learned / best peer {points[-1]['best_peer'] if points else '-'})")
    print(f"{'round':>5} " + " ".join(f"{m:>21}" for m in metrics) + f" {'bound':>8}  promoted")

    def pair(values: dict) -> str:
        text = [f"{values[k]:.3f}" if values[k] is not None else "-" for k in ("learned", "best_peer")]
        return f"{text[0] + ' / ' + text[1]:>21}"

    for p in points:
        bound = f"{p['lower_bound']:.3f}" if p["lower_bound"] is not None else "-"
        print(f"{p['round']:>5} " + " ".join(pair(p["metrics"][m]) for m in metrics)
              + f" {bound:>8}  {'yes' if p['promoted'] else 'no'}")
