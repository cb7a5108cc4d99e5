"""The pipeline, declared once: its steps in order, what each needs and what it gives.

Three runners read this one declaration:

- the Prefect flow (``aiprim.flows.retrain``) makes each step a task, with
  the retries and cache policy declared here;
- ``aiprim train`` runs the steps from ``validate`` to ``register`` in-process;
- DVC runs one stage per step (``dvc.yaml``; a test checks it against
  ``STEPS``): ``aiprim step STEP PRIMITIVE --dir data/dvc/PRIMITIVE`` reads
  the files of what the step needs from that folder and writes the file of
  what it gives, so each stage does only its own step; after ``promote``, the
  ``transfer`` stage (``TRANSFER_STEP``) of a primitive that opts in.

Every value passed between steps is JSON (paths, ids, small records), never
a live model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Step:
    name: str
    needs: tuple[str, ...]   # values earlier steps gave
    gives: str               # the value this step gives
    file: str                # where DVC keeps that value, in the primitive's folder
    retries: int = 0
    retry_delay_seconds: tuple[int, ...] = ()
    cached: bool = False     # Prefect reuses the result for the same inputs (tuning is expensive)


STEPS: tuple[Step, ...] = (
    Step("snapshot", (), "snapshot_dir", "snapshot", retries=2, retry_delay_seconds=(2, 10)),
    Step("validate", ("snapshot_dir",), "validation", "validation.json"),
    Step("tune", ("snapshot_dir", "validation"), "tuned", "tuned.json", cached=True),
    Step("train", ("snapshot_dir", "tuned"), "run_id", "train.json"),
    Step("evaluate", ("snapshot_dir", "run_id"), "evaluation", "evaluation.json", retries=1, retry_delay_seconds=(5,)),
    Step("register", ("run_id", "evaluation"), "version", "registration.json",
         retries=2, retry_delay_seconds=(2, 10)),
    Step("promote", ("version", "snapshot_dir", "evaluation"), "decision", "promotion.json"),
)
# After the branches, for a primitive in ``transfer.primitives``: the transfer stage (flows/transfer.py). The flow
# runs it once every branch is done, not as a step of one; DVC runs it as one more stage after promote.
TRANSFER_STEP = Step("transfer", ("decision",), "transfer", "transfer.json")
STAGES: tuple[Step, ...] = STEPS + (TRANSFER_STEP,)  # every DVC stage, in dvc.yaml's order
# Written beside evaluation.json by the DVC stage: the numbers alone (DVC metrics) and the comparison chart (DVC plots).
METRICS_FILE, COMPARISON_PLOT = "metrics.json", "comparison.png"


def step_named(name: str) -> Step:
    for step in STAGES:
        if step.name == name:
            return step
    raise ValueError(f"unknown step {name!r} (steps: {', '.join(s.name for s in STAGES)})")


def steps_between(first: str, last: str) -> tuple[Step, ...]:
    names = [s.name for s in STEPS]
    return STEPS[names.index(first): names.index(last) + 1]


def run_step(step: Step, primitive: str, cfg: dict, values: dict[str, Any], source: str | None = None,
             trials: int | None = None, snapshot_to: Path | None = None, deployment: str | None = None) -> Any:
    """Run one step on the values it needs; returns the value it gives (JSON-able)."""
    from ..primitives import get
    from ._interrupt import raise_if_interrupted
    from ._machine import machine_lock

    raise_if_interrupted(f"{primitive}'s {step.name} step")
    timed = step.name in get(primitive).timed_steps
    waiting = f"{primitive}: {step.name} waits for the machine: its steps that time things run alone" if timed else None
    with machine_lock(exclusive=timed, waiting=waiting):
        return _run_step(step, primitive, cfg, values, source, trials, snapshot_to, deployment)


def _run_step(step: Step, primitive: str, cfg: dict, values: dict[str, Any], source: str | None,
              trials: int | None, snapshot_to: Path | None, deployment: str | None) -> Any:
    from ..primitives._report import EvaluationReport
    from . import steps

    missing = [n for n in step.needs if n not in values]
    if missing:
        raise ValueError(f"step {step.name}: needs {', '.join(missing)} from an earlier step")
    snapshot_dir = Path(values["snapshot_dir"]) if "snapshot_dir" in values else None
    if step.name == "snapshot":
        return str(steps.snapshot(primitive, cfg, source=source, exact=snapshot_to, deployment=deployment))
    if step.name == "validate":
        report = steps.validate(primitive, snapshot_dir, cfg)
        return {"valid": report.ok, "data_docs": report.docs}
    if step.name == "tune":
        return steps.tune(primitive, snapshot_dir, cfg, trials=trials)
    if step.name == "train":
        return steps.train(primitive, snapshot_dir, cfg, values["tuned"])
    if step.name == "evaluate":
        # The champion is scored in the same session, so promotion compares like with like.
        return steps.evaluate(primitive, snapshot_dir, cfg, model=values["run_id"], part="holdout",
                              against_champion=True).to_dict()
    if step.name == "register":
        return steps.register(primitive, values["run_id"], EvaluationReport.from_dict(values["evaluation"]))
    if step.name == "promote":
        report = EvaluationReport.from_dict(values["evaluation"])
        return steps.promote(primitive, values["version"], snapshot_dir, cfg, report).to_dict()
    if step.name == "transfer":
        from .transfer import stage, stage_primitives, stage_summary

        if primitive not in stage_primitives(cfg):
            return {"skipped": f"{primitive} is not in transfer.primitives of configs/pipeline.yaml"}
        return stage_summary(stage(primitive, cfg))
    raise ValueError(f"step {step.name}: no runner")


def run_steps(primitive: str, cfg: dict, values: dict[str, Any], first: str, last: str, **options) -> dict[str, Any]:
    """Run the declared steps from ``first`` to ``last`` in order, in this process."""
    values = dict(values)
    for step in steps_between(first, last):
        values[step.gives] = run_step(step, primitive, cfg, values, **options)
    return values


# --- DVC: one stage per step, values in files ------------------------------------

def read_value(step: Step, folder: Path) -> Any:
    path = Path(folder) / step.file
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (run the {step.name} stage first)")
    if step.name == "snapshot":
        return str(path)
    return json.loads(path.read_text())[step.gives]


def write_value(step: Step, folder: Path, value: Any) -> None:
    if step.name != "snapshot":  # the snapshot step writes its directory itself
        (Path(folder) / step.file).write_text(json.dumps({step.gives: value}, indent=2, default=str) + "\n")


def run_stage(step_name: str, primitive: str, cfg: dict, folder: Path, **options) -> Any:
    """A DVC stage: read what the step needs from ``folder``, run it, write what it gives there."""
    step = step_named(step_name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    givers = {s.gives: s for s in STEPS}
    values = {need: read_value(givers[need], folder) for need in step.needs}
    if step.name == "snapshot":
        options["snapshot_to"] = folder / step.file
    value = run_step(step, primitive, cfg, values, **options)
    write_value(step, folder, value)
    if step.name == "evaluate":
        from ..primitives._report import CHAMPION_CANDIDATE, EvaluationReport
        from .steps import comparison_plot

        # What experiments are compared by: the challenger's numbers, and the primary metric of what it must
        # beat. Every peer's numbers stay in evaluation.json (their hundreds of columns buried the challenger's
        # in `dvc metrics show`).
        report = EvaluationReport.from_dict(value)
        numbers = {"learned": {k: v for k, v in report.metrics.items() if isinstance(v, (int, float))}}
        if (champion := report.primary(CHAMPION_CANDIDATE)) is not None:
            numbers["champion"] = {report.primary_metric: champion}
        if (best := report.best_baseline()) is not None:
            numbers["best_peer"] = {report.primary_metric: best[1]}
        (folder / METRICS_FILE).write_text(json.dumps(numbers, indent=2) + "\n")
        figure = comparison_plot(report)
        if figure is not None:
            figure.savefig(folder / COMPARISON_PLOT, dpi=110)
    return value
