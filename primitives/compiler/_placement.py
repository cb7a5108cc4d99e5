"""Placement: on which target a computation runs fastest, decided by the cost model before anything runs.

A computation such as ``matmul`` has one kernel family per target: ``matmul``
(C, fp32) on the CPU and ``triton_matmul`` (Triton, fp16 with fp32
accumulation) on a CUDA GPU (``Family.computes``). For each target the cost
model scores candidate schedules of that target's family and predicts the
best one's time in seconds; the task goes where that time is least. This
needs predictions in absolute time, not only a ranking within one target,
and a model trained on measurements of every target it decides between
(a snapshot measured where a GPU is present holds both).

The times compared are the kernels' own, with operands already resident on
the target: copying them to a GPU is not counted.
"""

from __future__ import annotations

import numpy as np

from ._autotune import rank_candidates
from ._space import FAMILIES, TARGETS, TaskError


def parse_targets(spec: str) -> list[str]:
    """``cpu,cuda`` as a list of known targets, each once."""
    targets = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        raise TaskError(f"--targets {spec!r}: {'unknown target ' + ', '.join(unknown) if unknown else 'no target'} "
                        f"(known: {', '.join(TARGETS)})")
    return list(dict.fromkeys(targets))


def counterpart(kernel: str, target: str) -> str:
    """The kernel family that computes what ``kernel`` computes, on ``target``."""
    computation = FAMILIES[kernel].computation
    for name, family in FAMILIES.items():
        if family.target == target and family.computation == computation:
            return name
    raise TaskError(f"{kernel} has no kernel family on {target} (families there: "
                    f"{', '.join(n for n, f in FAMILIES.items() if f.target == target) or 'none'})")


def check_trained_on(runtime, kernel: str, target: str) -> None:
    known = getattr(runtime, "kernels", None)
    if known is not None and kernel not in known:
        raise TaskError(f"the cost model was trained on no {kernel} task, so it cannot predict times on {target} "
                        f"(its kernels: {', '.join(known)}); train it on a snapshot measured on that target")


def place(task: dict, runtime, targets: list[str], candidates: int = 2000, seed: int = 0,
          caches: dict[str, tuple[int, int]] | None = None) -> dict:
    """The model's choice of target for ``task`` (``{"kernel", "shape"}``), with each target's predicted best.

    The CPU's times are predicted for this machine's caches, or for ``caches["cpu"]`` (``(l1_bytes, l2_bytes)``)
    when deciding for another machine, such as the one a snapshot was measured on.

    Returns ``{"choice": target, "targets": {target: {"kernel", "predicted_s", "schedule", "pool", "predicted",
    "order"}}}``; ``pool``/``predicted``/``order`` are the scored candidates (for measuring the top ones).
    """
    per_target = {}
    for target in targets:
        kernel = counterpart(task["kernel"], target)
        check_trained_on(runtime, kernel, target)
        pool, predicted, order = rank_candidates({"kernel": kernel, "shape": task["shape"]}, runtime, candidates, seed,
                                                 (caches or {}).get(target))
        best = int(order[0])
        per_target[target] = {"kernel": kernel, "predicted_s": float(predicted[best]), "schedule": pool[best],
                              "pool": pool, "predicted": predicted, "order": order}
    choice = min(per_target, key=lambda t: per_target[t]["predicted_s"])
    return {"choice": choice, "targets": per_target}


def placement_report(decisions: list[str], measured_best: list[dict]) -> dict:
    """Accuracy and regret of placement decisions against measured per-target best times.

    ``decisions[i]`` is the target chosen for task i; ``measured_best[i]`` maps each target to the best measured
    time there. Regret is the chosen target's best over the fastest target's (1.0: the right choice).
    """
    regret = np.array([m[d] / min(m.values()) for d, m in zip(decisions, measured_best)], dtype=float)
    right = np.array([m[d] == min(m.values()) for d, m in zip(decisions, measured_best)], dtype=bool)
    return {"tasks": len(decisions), "accuracy": float(right.mean()) if len(right) else float("nan"),
            "geomean_regret": float(np.exp(np.log(regret).mean())) if len(regret) else float("nan"),
            "max_regret": float(regret.max()) if len(regret) else float("nan")}
