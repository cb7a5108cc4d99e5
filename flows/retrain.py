"""Prefect flows over the steps: one branch flow per primitive, and ``retrain``.

Tasks pass paths, ids and small records; the snapshot and evaluation steps
retry I/O with explicit delays; tuning is cached on its inputs (the snapshot
id is a content hash, so the same data and config reuse the same study).

The branches run on the task runner of ``prefect.task_runner``: threads of the
flow's process, or worker processes of a Dask cluster or Ray instance that the
flow starts and stops. A branch's steps all run in its worker; what workers
share (the machine lock, the stores, the result storage) works across processes.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.context import FlowRunContext

from . import config as cfgmod
from . import pipeline
from .errors import describe_failure, retry_can_help


def _run_step(step_name: str, name: str, profile: str | None, values: dict, source: str | None, config_key: str,
              deployment: str | None = None) -> object:
    # config_key (a hash of the primitive's config) is an input so that a changed config is a cache miss.
    return pipeline.run_step(pipeline.step_named(step_name), name, cfgmod.load(profile), values, source=source,
                             deployment=deployment)


def _task(step: pipeline.Step):
    options = {"name": f"{step.name}-primitive", "retries": step.retries,
               "retry_delay_seconds": list(step.retry_delay_seconds) or None, "retry_condition_fn": _retry_can_help}
    if step.cached:
        options.update(cache_policy=INPUTS + TASK_SOURCE, cache_expiration=timedelta(days=7))
    return task(**options)(_run_step)


def _retry_can_help(task, task_run, state) -> bool:
    error = state.data  # the exception, for a task that raised
    return not isinstance(error, BaseException) or retry_can_help(error)


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


def _console_of_the_command() -> None:
    """In a worker process (Dask, Ray), print through the console the command set up in its own process."""
    import os

    from aiprim import _console

    level = os.environ.get("AIPRIM_VERBOSITY")
    if level is not None and _console._verbosity is None:
        _console.setup_logging(int(level))
        if not os.environ.get("AIPRIM_DEBUG"):
            from .errors import hide_library_tracebacks

            hide_library_tracebacks()


@task(name="run-branch")
def run_branch(name: str, source: str | None, profile: str | None, deployment: str | None = None) -> dict:
    import os
    import socket

    _console_of_the_command()
    result = primitive_pipeline(name, source, profile, deployment)
    # Where the branch ran: the flow's own process (threads), or a Dask/Ray worker process.
    return {**result, "process": {"host": socket.gethostname(), "pid": os.getpid()}}


@flow(name="retrain")
def retrain(primitives: list[str] | None = None, source: str | None = None, profile: str | None = None,
            deployment: str | None = None) -> dict:
    """Retrain every primitive concurrently; a failed branch leaves the others and every champion alone."""
    from aiprim import primitives as registry_of_primitives

    from .steps import primitives_in_source

    logger = get_run_logger()
    cfg = cfgmod.load(profile)
    # A source retrains the primitives it holds snapshots of (a balancer snapshot: the balancer alone).
    names = primitives or (primitives_in_source(source) if source else None) or cfg.get("primitives") or registry_of_primitives.names()
    _create_stores(cfg)
    current = FlowRunContext.get().task_runner
    if RUNNER_KINDS.get(type(current).__name__) == cfg["prefect"].get("task_runner", "threads"):
        # `aiprim run`, `aiprim schedule`: retrain_with_runner gave the flow the configured runner
        results = _run_branches(current, names, source, profile, deployment, logger)
    else:
        # A deployment's run (`aiprim stack run`) loads the flow as declared, with Prefect's default runner:
        # the profile's runner is started here, for this run's branches, and stopped with them.
        with task_runner(cfg) as configured:
            results = _run_branches(configured, names, source, profile, deployment, logger)
    for name in _transfer_primitives(cfg, names, results, deployment):
        try:
            results[name]["transfer"] = transfer_deployments(name, profile)
        except Exception as error:  # the branch's own version stands; the run fails, saying why
            reason = describe_failure(error)
            logger.error("%s transfer stage failed: %s", name, reason)
            results[name]["error"] = f"transfer stage: {reason}"
    create_table_artifact(
        key="retrain-summary",
        table=[{"primitive": n, "version": r.get("version"), "promoted": (r.get("decision") or {}).get("promoted"), "error": r.get("error")} for n, r in results.items()],
    )
    return results


def _transfer_primitives(cfg: dict, names: list[str], results: dict, deployment: str | None) -> list[str]:
    """The primitives whose transfer stage runs after the branches: named in ``transfer.primitives``, retrained in
    this run without an error, for the default deployment (a run for one named deployment trains that one only)."""
    from aiprim.registry._deployments import DEFAULT_DEPLOYMENT

    from .transfer import stage_primitives

    if (deployment or DEFAULT_DEPLOYMENT) != DEFAULT_DEPLOYMENT:
        return []
    return [name for name in stage_primitives(cfg) if name in names and not results.get(name, {}).get("error")]


@task(name="transfer-deployments")
def transfer_deployments(name: str, profile: str | None) -> dict:
    """The transfer stage (``aiprim.flows.transfer.stage``) for one primitive: its population grown to
    ``transfer.population``, then primitives decoded for newly drawn deployments, each promoted on its merits."""
    from .transfer import stage, stage_summary

    return stage_summary(stage(name, cfgmod.load(profile)))


def _run_branches(runner, names: list[str], source: str | None, profile: str | None, deployment: str | None,
                  logger) -> dict:
    # What `run_branch.submit(...)` does, on a runner given here rather than the flow run's own.
    from ._interrupt import branches_stop_with_the_wait

    results = {}
    with branches_stop_with_the_wait():
        futures = {name: runner.submit(run_branch, {"name": name, "source": source, "profile": profile,
                                                    "deployment": deployment}) for name in names}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except Exception as error:  # reported per branch; the flow still summarises the rest
                reason = describe_failure(error)
                logger.error("%s branch failed: %s", name, reason)
                results[name] = {"primitive": name, "error": reason}
    return results


def _create_stores(cfg: dict) -> None:
    """Create the MLflow and Optuna schemas here, before the branches start.

    Branches that are threads of this process create them once under a lock; branches in worker
    processes (Dask, Ray) would race to create a new SQLite store ("table ... already exists").
    """
    from aiprim.registry._store import configure
    from aiprim.settings import optuna_storage

    from .steps import _optuna_storage

    configure()
    _optuna_storage(optuna_storage(cfg["optuna"]["storage"]))


RUNNER_KINDS = {"ThreadPoolTaskRunner": "threads", "DaskTaskRunner": "dask", "RayTaskRunner": "ray"}


def task_runner(cfg: dict):
    """The task runner named in configs/pipeline.yaml (threads by default)."""
    prefect_cfg = cfg["prefect"]
    kind = prefect_cfg.get("task_runner", "threads")
    workers = int(prefect_cfg.get("max_workers", 4))
    address = prefect_cfg.get("address")
    if kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        DaskTaskRunner = _runner_class("prefect_dask", "DaskTaskRunner", "prefect-dask", "prefect-dask")

        if address:
            return DaskTaskRunner(address=address)
        # One thread per worker process: a branch trains with torch's own threads (lightning.cpu_threads), and
        # two branches in one worker would share its interpreter again. 127.0.0.1 only, and no dashboard (it
        # needs bokeh, and would listen on every interface).
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "host": "127.0.0.1", "dashboard_address": None})
    if kind == "ray":
        RayTaskRunner = _runner_class("prefect_ray", "RayTaskRunner", "prefect-ray", "'aiprim[ray]'")

        if address:
            return RayTaskRunner(address=address)
        import logging

        from aiprim._console import logger

        # Ray (2.60) cannot be kept on 127.0.0.1: ray.init turns a loopback node address into the machine's
        # own, and its GCS, raylet and worker gRPC servers listen on every interface, guarded by Ray's token
        # authentication only. Said once per run, since every other server of aiprim binds 127.0.0.1.
        logger().warning("prefect.task_runner ray: the local Ray instance listens on every interface of this "
                         "machine (Ray has no loopback-only mode; its token authentication guards it)")
        # `workers` CPUs, each branch a task of one CPU (Ray's default), so at most `workers` branches at
        # once; no dashboard, and no INFO lines from Ray's logger (it prints past the console).
        return RayTaskRunner(init_kwargs={"num_cpus": workers, "include_dashboard": False,
                                          "logging_level": logging.WARNING})
    raise cfgmod.ConfigError(f"prefect.task_runner: unknown runner {kind!r} (threads, dask or ray)")


def _runner_class(module: str, name: str, package: str, install: str):
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        raise cfgmod.ConfigError(f"prefect.task_runner needs {package}, which is not installed "
                                 f"(pip install {install})") from None


def retrain_with_runner(cfg: dict):
    return retrain.with_options(task_runner=task_runner(cfg))
