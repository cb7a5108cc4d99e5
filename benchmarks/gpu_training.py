"""The Lightning GPU path of the query and compiler models, beside the CPU path, on the same data.

Trains each model twice with the pipeline's training config (accelerator "cpu", then "gpu") and reports
wall time and held-out quality of the exported numpy runtime, which must not depend on where it was
trained. Query: synthetic telemetry with a parameter-dependent best arm (the behavioural test's).
Compiler: a snapshot measured by `aiprim snapshot compiler` (``--compiler-snapshot``), scored without
peers (XGBoost is not needed to compare two trainings of the same model).

    python benchmarks/gpu_training.py --compiler-snapshot DIR --out benchmarks/results/gpu_training.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def query_case(accelerator: str, workdir: Path) -> dict:
    import numpy as np
    import yaml

    sys.path.insert(0, str(REPO))
    from aiprim import primitives
    from tests.behavioural.test_query_behaviour import HEAVY_SQL, _telemetry

    prim = primitives.get("query")
    params = {**yaml.safe_load((REPO / "configs" / "query.yaml").read_text())["train"], "max_epochs": 80}
    tables = _telemetry(seed=0, n=400)
    train, held = prim.split(tables, 0.2)
    started = time.perf_counter()
    runtime = prim.train_runtime(train, params, workdir / f"query-{accelerator}", seed=0, accelerator=accelerator)
    seconds = time.perf_counter() - started
    from aiprim.primitives.query._templates import fingerprint

    heavy, light = (runtime.predictions_of(fingerprint(HEAVY_SQL.format(v=1)), [(rows, 100_000)]) for rows in (90_000, 50))
    return {"train_s": seconds, "heavy_arm": runtime.decide(heavy[0], runtime.arm_ids, heavy[1]),
            "light_arm": runtime.decide(light[0], runtime.arm_ids, light[1]),
            "heavy_ratio_arm1": float(np.exp(heavy[0][:, 1].mean())), "light_native_ms": light[1],
            "val_total_latency_ratio": runtime.meta.get("val_total_latency_ratio")}


def compiler_case(accelerator: str, snapshot: Path, workdir: Path) -> dict:
    import yaml

    from aiprim import primitives
    from aiprim.primitives._snapshot import read_tables

    prim = primitives.get("compiler")
    params = {**yaml.safe_load((REPO / "configs" / "compiler.yaml").read_text())["train"], "members": 5}
    tables = read_tables(snapshot, prim.schema)
    train, held = prim.split(tables, 0.2)
    started = time.perf_counter()
    runtime = prim.train_runtime(train, params, workdir / f"compiler-{accelerator}", seed=0, accelerator=accelerator)
    seconds = time.perf_counter() - started
    report = prim.evaluate(runtime, held, {"baselines": False, "seed": 0})
    return {"train_s": seconds, **{k: report["metrics"][k] for k in ("kendall_tau", "top1_score", "top5_score", "mape")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compiler-snapshot", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_training.json")
    args = parser.parse_args()
    import torch

    results = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "torch": torch.__version__, "cases": {}}
    accelerators = ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        for accelerator in accelerators:
            results["cases"][f"query/{accelerator}"] = query_case(accelerator, Path(tmp))
            print(json.dumps({f"query/{accelerator}": results["cases"][f"query/{accelerator}"]}), flush=True)
            if args.compiler_snapshot:
                results["cases"][f"compiler/{accelerator}"] = compiler_case(accelerator, args.compiler_snapshot, Path(tmp))
                print(json.dumps({f"compiler/{accelerator}": results["cases"][f"compiler/{accelerator}"]}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
