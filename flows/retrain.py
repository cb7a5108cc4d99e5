"""Prefect flows over the steps: one branch flow per primitive, and ``retrain``.

Tasks pass paths, ids and small records; the snapshot and evaluation steps
retry I/O with explicit delays; tuning is cached on its inputs (the snapshot
id is a content hash, so the same data and config reuse the same study).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE

from . import config as cfgmod
from . import steps


@task(name="take-snapshot", retries=2, retry_delay_seconds=[2, 10])
def take_snapshot(name: str, source: str | None, profile: str | None) -> str:
    return str(steps.snapshot(name, cfgmod.load(profile), source=source))


@task(name="validate-snapshot")
def validate_snapshot(name: str, snapshot_dir: str, profile: str | None) -> str:
    report = steps.validate(name, Path(snapshot_dir), cfgmod.load(profile))
    return report.docs or ""


@task(name="tune-primitive", cache_policy=INPUTS + TASK_SOURCE, cache_expiration=timedelta(days=7))
def tune_primitive(name: str, snapshot_dir: str, profile: str | None, config_key: str) -> dict:
    # config_key (a hash of the primitive's config) is an input so a changed config is a cache miss.
    return steps.tune(name, Path(snapshot_dir), cfgmod.load(profile))


@task(name="train-primitive")
def train_primitive(name: str, snapshot_dir: str, profile: str | None, params: dict) -> str:
    return steps.train(name, Path(snapshot_dir), cfgmod.load(profile), params)


@task(name="evaluate-model", retries=1, retry_delay_seconds=[5])
def evaluate_model(name: str, snapshot_dir: str, profile: str | None, run_id: str) -> dict:
    return steps.evaluate(name, Path(snapshot_dir), cfgmod.load(profile), model=run_id, part="holdout")


@task(name="register-model", retries=2, retry_delay_seconds=[2, 10])
def register_model(name: str, run_id: str, snapshot_dir: str, report: dict) -> str:
    return steps.register(name, run_id, Path(snapshot_dir), report)


@task(name="promote-model")
def promote_model(name: str, version: str, snapshot_dir: str, profile: str | None, report: dict) -> dict:
    return steps.promote(name, version, Path(snapshot_dir), cfgmod.load(profile), report).to_dict()


@flow(name="primitive-pipeline", flow_run_name="{name}")
def primitive_pipeline(name: str, source: str | None = None, profile: str | None = None) -> dict:
    """snapshot -> validate -> tune -> train -> evaluate -> register -> promote, for one primitive."""
    cfg = cfgmod.load(profile)
    snapshot_dir = take_snapshot(name, source, profile)
    validate_snapshot(name, snapshot_dir, profile)
    params = tune_primitive(name, snapshot_dir, profile, cfgmod.config_hash(cfgmod.primitive_config(cfg, name)))
    run_id = train_primitive(name, snapshot_dir, profile, params)
    report = evaluate_model(name, snapshot_dir, profile, run_id)
    version = register_model(name, run_id, snapshot_dir, report)
    decision = promote_model(name, version, snapshot_dir, profile, report)
    _publish_report(name, report, decision)
    return {"primitive": name, "snapshot": snapshot_dir, "run_id": run_id, "version": version, "decision": decision, "report": report}


def _publish_report(name: str, report: dict, decision: dict) -> None:
    from aiprim import primitives

    prim = primitives.get(name)
    rows = [{"model": "learned", **_round(report["metrics"])}]
    rows += [{"model": peer, **_round(m)} for peer, m in report["baselines"].items()]
    create_table_artifact(key=f"{name}-evaluation", table=rows, description=f"{name}: held-out evaluation ({prim.primary_metric} is primary)")
    create_markdown_artifact(
        key=f"{name}-promotion",
        markdown=f"### {name}\n\nversion {decision['version']}: **{'promoted' if decision['promoted'] else 'not promoted'}**: {decision['reason']}\n",
    )


def _round(metrics: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items() if not isinstance(v, (list, dict))}


@task(name="run-branch")
def run_branch(name: str, source: str | None, profile: str | None) -> dict:
    return primitive_pipeline(name, source, profile)


@flow(name="retrain")
def retrain(primitives: list[str] | None = None, source: str | None = None, profile: str | None = None) -> dict:
    """Retrain every primitive concurrently; a failed branch leaves the others and every champion alone."""
    from aiprim import primitives as registry_of_primitives

    logger = get_run_logger()
    cfg = cfgmod.load(profile)
    names = primitives or cfg.get("primitives") or registry_of_primitives.names()
    futures = {name: run_branch.submit(name, source, profile) for name in names}
    results = {}
    for name, future in futures.items():
        try:
            results[name] = future.result()
        except Exception as error:  # reported per branch; the flow still summarises the rest
            logger.error("%s branch failed: %s", name, error)
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            results[name] = {"primitive": name, "error": first_line}
    create_table_artifact(
        key="retrain-summary",
        table=[{"primitive": n, "version": r.get("version"), "promoted": (r.get("decision") or {}).get("promoted"), "error": r.get("error")} for n, r in results.items()],
    )
    return results


def task_runner(cfg: dict):
    """The task runner named in configs/pipeline.yaml (threads by default)."""
    kind = cfg["prefect"].get("task_runner", "threads")
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=int(cfg["prefect"].get("max_workers", 4)))
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=cfg["prefect"].get("address"))
    if kind == "ray":
        from prefect_ray import RayTaskRunner

        return RayTaskRunner(address=cfg["prefect"].get("address"))
    raise cfgmod.ConfigError(f"prefect.task_runner: unknown runner {kind!r} (threads, dask or ray)")


def retrain_with_runner(cfg: dict):
    return retrain.with_options(task_runner=task_runner(cfg))
