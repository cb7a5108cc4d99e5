"""The Lightning GPU path of every primitive, beside the CPU path, on the same data.

Each primitive trains twice from the same tables, seed and training config (accelerator "cpu", then
"gpu") through ``Primitive.train_runtime``; both exported numpy runtimes are scored on the same held-out
part without peers (peers do not depend on where the model trained). Reported: wall time of training and
the primitive's primary metric for each (the query optimizer: its decisions on two probes), so a GPU path that trains a different model shows as a different
metric. Telemetry comes from each primitive's embedded source at a shrunk size, except the query
optimizer's (the behavioural test's synthetic telemetry: the embedded source needs a database server).
The compiler's source measures real kernels on this machine's CPU, and Triton matmul configurations on
its GPU where there is one.

    python benchmarks/gpu_training.py --out benchmarks/results/gpu_training.json [--primitives balancer,sharder]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Small enough that a primitive trains twice within a minute or two on the lent machine's CPU.
SOURCES = {
    "balancer": {"servers": 60, "requests": 200_000, "keys": 60_000, "zipf_offset": 300},
    "sharder": {"transactions": 40_000, "warehouses": 16},
    "compiler": {"families": ["matmul", "conv2d", "stencil2d"], "tasks_per_family": 8, "schedules_per_task": 16,
                 "repeats": 3, "gpu_tasks": 3, "gpu_configs": 16},  # Triton shapes reach 4096^3: each costs seconds
}
EPOCHS = {"balancer": 20, "sharder": 8, "query": 80, "compiler": 40}
EVALUATE = {"balancer": {"disruption_trials": 1, "hash_draws": 1}, "sharder": {}, "query": {}, "compiler": {}}


def tables_of(name: str, prim) -> dict:
    if name == "query":
        sys.path.insert(0, str(REPO))
        from tests.behavioural.test_query_behaviour import _telemetry

        return _telemetry(seed=0, n=400)
    tables, _ = prim.generate(SOURCES[name], seed=0)
    return tables


def train_params(name: str, prim):
    import yaml

    config = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())
    return prim.params({**config["train"], "max_epochs": EPOCHS[name]}, where=f"{name} train params")


def query_decisions(runtime) -> dict:
    """The query optimizer's evaluation runs queries on a database; here, its decisions on the behavioural
    test's two probes (a heavy parameter, where arm 1 is 5x faster, and a light one, where native is best)
    and the held-out latency ratio its export calibrated on."""
    import numpy as np

    from aiprim.primitives.query._templates import fingerprint
    from tests.behavioural.test_query_behaviour import HEAVY_SQL

    heavy, light = (runtime.predictions_of(fingerprint(HEAVY_SQL.format(v=1)), [(rows, 100_000)]) for rows in (90_000, 50))
    return {"heavy_arm": runtime.decide(heavy[0], runtime.arm_ids, heavy[1]),
            "light_arm": runtime.decide(light[0], runtime.arm_ids, light[1]),
            "heavy_ratio_arm1": float(np.exp(heavy[0][:, 1].mean())),
            "val_total_latency_ratio": runtime.meta.get("val_total_latency_ratio")}


def one_case(name: str, accelerator: str, tables: dict, workdir: Path) -> dict:
    from aiprim import primitives

    prim = primitives.get(name)
    train, held = prim.split(tables, 0.2)
    started = time.perf_counter()
    runtime = prim.train_runtime(train, train_params(name, prim), workdir / f"{name}-{accelerator}", seed=0,
                                 accelerator=accelerator)
    seconds = time.perf_counter() - started
    if name == "query":
        return {"train_s": round(seconds, 2), **query_decisions(runtime)}
    report = prim.evaluate(runtime, held, {**EVALUATE[name], "baselines": False, "seed": 0, "training_tables": train})
    return {"train_s": round(seconds, 2), prim.primary_metric: report.metrics[prim.primary_metric],
            "metrics": {k: v for k, v in report.metrics.items() if isinstance(v, (int, float))}}


def weight_difference(workdir: Path, name: str) -> float | None:
    """The largest absolute difference between the CPU- and the GPU-trained exports' arrays. The balancer's and
    the sharder's metrics at this size do not depend on their networks (1 and 20 epochs score the same: the split
    LP and the hot-unit table route every class seen; packing places the shards), so equal metrics alone would
    not show that the GPU trained the same model."""
    import numpy as np

    exports = [sorted((workdir / f"{name}-{a}").glob("*.npz")) for a in ("cpu", "gpu")]
    if not all(exports):
        return None
    with np.load(exports[0][0]) as cpu, np.load(exports[1][0]) as gpu:
        shared = [k for k in cpu.files if k in gpu.files and cpu[k].shape == gpu[k].shape and cpu[k].dtype.kind == "f"]
        return max((float(np.abs(cpu[k] - gpu[k]).max()) for k in shared if cpu[k].size), default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--primitives", default="balancer,sharder,query,compiler")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_training.json")
    args = parser.parse_args()
    import torch

    from aiprim import primitives

    results = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "torch": torch.__version__, "cases": {}}
    accelerators = ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.primitives.split(","):
            started = time.perf_counter()
            try:
                tables = tables_of(name, primitives.get(name))
            except Exception as exc:  # one primitive's failure must not hide the others' results
                results["cases"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                print(json.dumps({name: results["cases"][name]}), flush=True)
                continue
            results["cases"][name] = {"telemetry_s": round(time.perf_counter() - started, 2)}
            for accelerator in accelerators:
                try:
                    case = one_case(name, accelerator, tables, Path(tmp))
                except Exception as exc:
                    case = {"error": f"{type(exc).__name__}: {exc}"}
                results["cases"][name][accelerator] = case
                print(json.dumps({f"{name}/{accelerator}": case}), flush=True)
            if len(accelerators) > 1:
                results["cases"][name]["weights_max_abs_difference"] = weight_difference(Path(tmp), name)
            args.out.write_text(json.dumps(results, indent=2) + "\n")  # after each primitive: a killed run keeps what it had
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
