"""Prefect flows over the steps: one branch flow per primitive, and ``retrain``.

Tasks pass paths, ids and small records; the snapshot and evaluation steps
retry I/O with explicit delays; tuning is cached on its inputs (the snapshot
id is a content hash, so the same data and config reuse the same study).
"""

from __future__ import annotations

from datetime import timedelta

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE

from . import config as cfgmod
from . import pipeline


def _run_step(step_name: str, name: str, profile: str | None, values: dict, source: str | None, config_key: str,
              deployment: str | None = None) -> object:
    # config_key (a hash of the primitive's config) is an input so that a changed config is a cache miss.
    return pipeline.run_step(pipeline.step_named(step_name), name, cfgmod.load(profile), values, source=source,
                             deployment=deployment)


def _task(step: pipeline.Step):
    options = {"name": f"{step.name}-primitive", "retries": step.retries,
               "retry_delay_seconds": list(step.retry_delay_seconds) or None}
    if step.cached:
        options.update(cache_policy=INPUTS + TASK_SOURCE, cache_expiration=timedelta(days=7))
    return task(**options)(_run_step)


@flow(name="primitive-pipeline", flow_run_name="{name}")
def primitive_pipeline(name: str, source: str | None = None, profile: str | None = None, deployment: str | None = None) -> dict:
    """The declared steps (``aiprim.flows.pipeline.STEPS``) for one primitive, each a task."""
    cfg = cfgmod.load(profile)
    config_key = cfgmod.config_hash(cfgmod.primitive_config(cfg, name))
    values: dict = {}
    for step in pipeline.STEPS:
        needed = {k: values[k] for k in step.needs}
        values[step.gives] = _task(step)(step.name, name, profile, needed, source, config_key, deployment)
    _publish_report(name, values["evaluation"], values["decision"])
    return {"primitive": name, "snapshot": values["snapshot_dir"], "run_id": values["run_id"], "version": values["version"],
            "decision": values["decision"], "report": values["evaluation"]}


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
def run_branch(name: str, source: str | None, profile: str | None, deployment: str | None = None) -> dict:
    return primitive_pipeline(name, source, profile, deployment)


@flow(name="retrain")
def retrain(primitives: list[str] | None = None, source: str | None = None, profile: str | None = None,
            deployment: str | None = None) -> dict:
    """Retrain every primitive concurrently; a failed branch leaves the others and every champion alone."""
    from aiprim import primitives as registry_of_primitives

    logger = get_run_logger()
    cfg = cfgmod.load(profile)
    names = primitives or cfg.get("primitives") or registry_of_primitives.names()
    futures = {name: run_branch.submit(name, source, profile, deployment) for name in names}
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
