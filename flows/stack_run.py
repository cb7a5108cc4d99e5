"""``aiprim stack run``: the retrain flow deployed to the stack's work pool and run by its worker.

The deployment names the flow by module path (``aiprim.flows.retrain:retrain``), so the worker, which
runs in this environment, imports it from the installed package: no code is copied or pulled. The
command waits for the flow run and exits non-zero unless it completed.
"""

from __future__ import annotations

import os

from .errors import AiprimError

DEPLOYMENT = "retrain"


def use_stack_environment() -> None:
    """Point this process's clients (Prefect, MLflow, Optuna) at the running stack, as ``stack.env`` does."""
    import shlex

    from .stack import StackError, env_path, is_up

    if not is_up() or not env_path().exists():
        raise StackError("the stack is not running (`aiprim stack up` starts it)")
    for line in env_path().read_text().splitlines():
        key, _, value = line.partition("=")
        os.environ[key] = shlex.split(value)[0]


def run_on_worker(primitives: list[str] | None, profile: str | None, source: str | None, timeout_s: float | None) -> dict:
    """Deploy (or update) ``retrain`` on the work pool, start a run of it and wait; returns the run's summary."""
    use_stack_environment()  # before Prefect is first imported: it reads PREFECT_API_URL then
    from prefect.deployments import run_deployment
    from prefect.deployments.runner import EntrypointType

    from .retrain import retrain
    from .stack import WORK_POOL, mask

    try:
        deployment = retrain.to_deployment(name=DEPLOYMENT, work_pool_name=WORK_POOL,
                                           entrypoint_type=EntrypointType.MODULE_PATH)
        deployment.apply(work_pool_name=WORK_POOL)
        flow_run = run_deployment(name=f"{retrain.name}/{DEPLOYMENT}",
                                  parameters={"primitives": primitives, "profile": profile, "source": source},
                                  timeout=timeout_s)
    except Exception as error:  # noqa: BLE001  (a readable line without the stack's secrets)
        raise AiprimError(mask(f"deploying or running the flow on the stack failed: {type(error).__name__}: {error}")) from None
    state = flow_run.state
    return {"flow_run": str(flow_run.id), "name": flow_run.name, "deployment": f"{retrain.name}/{DEPLOYMENT}",
            "work_pool": WORK_POOL, "state": state.type.value if state else None,
            "message": (state.message or "") if state else ""}


def command(args) -> int:
    import json

    names = args.primitives.split(",") if args.primitives else None
    summary = run_on_worker(names, args.profile, args.source, args.timeout)
    print(json.dumps(summary))
    if summary["state"] != "COMPLETED":
        raise AiprimError(f"flow run {summary['name']} ended {summary['state']}: {summary['message'][:300]} "
                          f"(the worker's log: `aiprim stack status`)")
    return 0
