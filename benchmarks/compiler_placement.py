"""Benchmark: placing matmuls on the CPU or a CUDA GPU by the cost model's predicted times (issue 11, item 4).

Everything is measured in one run, on one machine with a CUDA GPU:
1. telemetry: the same matmul shapes on both targets (C kernels in fp32 on the CPU, Triton in fp16 on the
   GPU), ``--schedules`` random schedules each, through the embedded source (a tasks.parquet of ``matmul``
   and ``triton_matmul`` tasks);
2. one cost model, trained (pipeline config) on the training shapes of both targets, and the XGBoost peer;
3. per held-out shape (never measured in training, on either target): each model predicts every target's
   best time over ``--candidates`` scored schedules and places the shape where it is least; the learned
   model's top ``--trials`` schedules on each target are then measured. The truth per target is the best
   time measured there (the snapshot's random schedules and those trials together).
Peers: always the CPU, always the GPU, and a flops threshold fitted on the training shapes (offload above
T flops, the rule BLAS dispatchers use). Kernel times only: copying operands to the GPU is not counted.

With ``--prior DIR`` (another machine's placement telemetry, e.g. a fixture of another lent GPU host), that
machine's model is placed beside them (issue 11 item 3, transfer across machines): as it is, fine-tuned on this
machine's training shapes (every layer, as ``compiler_transfer.py`` does), and trained on both machines' telemetry
pooled. The shapes held out here are dropped from the prior, so no model has seen them measured anywhere.

    python3 benchmarks/compiler_placement.py --out DIR                 # needs a CUDA GPU and a C compiler
    python3 benchmarks/compiler_placement.py --snapshot DIR --no-measure --out DIR   # decisions from saved telemetry
    python3 benchmarks/compiler_placement.py --snapshot DIR --no-measure --operands host --copies F [--copies-only]
    python3 benchmarks/compiler_placement.py --snapshot tests/fixtures/placement-h200 --no-measure \
        --prior tests/fixtures/placement-h100 --seed S     # decisions on the H200 host, starting from the H100's
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIMS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)  # multiples of 16: Triton compiles each configuration once for all of them


def log(message: str) -> None:
    print(f"[bench placement] {message}", file=sys.stderr, flush=True)


def draw_shapes(count: int, seed: int, dims=DIMS) -> list[dict]:
    rng = np.random.default_rng(seed)
    shapes, seen = [], set()
    while len(shapes) < count:
        shape = {d: int(rng.choice(dims)) for d in ("M", "N", "K")}
        key = (shape["M"], shape["N"], shape["K"])
        if key not in seen:
            seen.add(key)
            shapes.append(shape)
    return shapes


def measure_telemetry(shapes, args, out: Path) -> dict:
    import pandas as pd

    from aiprim import primitives
    from aiprim.primitives.compiler._source import task_id_of

    rows = [{"task_id": task_id_of(kernel, s), "kernel": kernel, "shape": json.dumps(s)}
            for s in shapes for kernel in ("matmul", "triton_matmul")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tasks.parquet"
        pd.DataFrame(rows).to_parquet(path)
        source = {"tasks": str(path), "schedules_per_task": args.schedules, "gpu_configs": args.gpu_configs,
                  "cache_dir": str(Path(tempfile.gettempdir()) / "aiprim-bench-kernels"), "repeats": 5, "time_limit_s": 0.5}
        tables, extra = primitives.get("compiler").generate(source, seed=args.seed)
    for name, table in tables.items():
        table.to_parquet(out / f"placement_{name}.parquet")
    log(f"telemetry on {extra['target']}: {int(tables['measurements']['runtime_s'].notna().sum())} of "
        f"{len(tables['measurements'])} schedules ran")
    return tables


def read_telemetry(directory: Path) -> dict:
    import pandas as pd

    return {name: pd.read_parquet(directory / f"placement_{name}.parquet") for name in ("tasks", "measurements")}


def best_measured(tables) -> dict:
    """task_id -> best measured seconds (tasks where nothing ran are absent)."""
    return tables["measurements"].dropna(subset=["runtime_s"]).groupby("task_id")["runtime_s"].min().to_dict()


def shape_key(shape: dict) -> str:
    return f"{shape['M']}x{shape['N']}x{shape['K']}"


def xgboost_predictor(peer):
    """predict(task, schedules) in seconds from the XGBoost peer, as the runtime's ``predict``."""
    from aiprim.primitives.compiler._features import featurize_task, log_flops
    from aiprim.primitives.compiler._machine import machine_caches
    from aiprim.primitives.compiler._runtime import knob_frame

    class Peer:
        kernels = None

        def predict(self, task, schedules, caches=None):
            frame = knob_frame(task["kernel"], schedules)
            x = featurize_task(task["kernel"], task["shape"], frame, caches if caches is not None else machine_caches(task["kernel"]))
            return np.exp(peer.predict(x) + log_flops(task["kernel"], task["shape"]))

    return Peer()


def prior_telemetry(directory: Path, held_ids: set) -> tuple[dict, dict]:
    """Another machine's telemetry without the shapes held out here, its task ids tagged so that a shape both
    machines measured stays two tasks when pooled (one shape, two machines, two sets of times)."""
    tables = read_telemetry(directory)
    prior = {name: t[~t["task_id"].isin(held_ids)].assign(task_id=lambda f: "prior:" + f["task_id"]).reset_index(drop=True)
             for name, t in tables.items()}
    dropped = len(tables["tasks"]) - len(prior["tasks"])
    about = {"folder": str(directory), "tasks": len(prior["tasks"]), "held_out_tasks_dropped": dropped,
             "targets": sorted(prior["tasks"]["target"].dropna().unique().tolist())}
    log(f"prior {directory}: {len(prior['tasks'])} tasks ({dropped} held out here, dropped)")
    return prior, about


def prior_models(prim, prior: dict, train: dict, params: dict, tuned: dict, accelerator: str) -> dict:
    """The prior machine's model as it is, fine-tuned on this machine's training part, and one model trained on
    both machines' telemetry pooled."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compiler_transfer import fine_tune

    work = Path(tempfile.mkdtemp(prefix="aiprim-placement-prior-"))
    source = prim.train_runtime(prior, params, work / "prior", seed=0, accelerator=accelerator)
    pooled = {name: pd.concat([prior[name], train[name]], ignore_index=True) for name in ("tasks", "measurements")}
    return {"prior as is": source,
            "prior fine-tuned": fine_tune(prim, train, tuned, source, None, work / "fine-tuned", 0),
            "pooled": prim.train_runtime(pooled, params, work / "pooled", seed=0, accelerator=accelerator)}


def _median_seconds(run, repeats: int = 15) -> float:
    import torch

    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def copy_seconds(shape: dict) -> float:
    """Measured: A and B (fp16, pageable host memory) to the GPU, and C back (what offloading one matmul costs)."""
    import torch

    M, N, K = shape["M"], shape["N"], shape["K"]
    a, b = torch.randn(M, K).half(), torch.randn(K, N).half()
    c = torch.empty(M, N, device="cuda", dtype=torch.float16)
    return _median_seconds(lambda: (a.to("cuda"), b.to("cuda"), c.to("cpu")))


def fit_copy_model() -> dict:
    """latency + bytes / bandwidth of one host-to-device copy, least squares over 4 KiB to 64 MiB: the classical
    model a runtime would calibrate once per machine."""
    import torch

    sizes = [2 ** k for k in range(12, 27, 2)]
    seconds = [_median_seconds(lambda t=torch.empty(n // 2, dtype=torch.float16): t.to("cuda")) for n in sizes]
    return copy_model_from(sizes, seconds)


def copy_model_from(sizes, seconds) -> dict:
    """The fit weighs every size by its own time (relative error): unweighted, the 64 MiB copy alone would set the
    latency (57 us on the H100's host, where a 4 KiB copy takes 19 us)."""
    sizes, seconds = np.asarray(sizes, dtype=float), np.asarray(seconds, dtype=float)
    slope, latency = np.polyfit(sizes, seconds, 1, w=1.0 / seconds)
    return {"latency_s": float(max(latency, 0.0)), "bytes_per_s": float(1.0 / slope), "sizes": sizes.tolist(),
            "seconds": seconds.tolist()}


def predicted_copy_seconds(shape: dict, model: dict) -> float:
    elements = shape["M"] * shape["K"] + shape["K"] * shape["N"] + shape["M"] * shape["N"]
    return 3 * model["latency_s"] + 2.0 * elements / model["bytes_per_s"]


def threshold_rule(train_shapes, truth) -> float:
    """The flops threshold above which offloading to the GPU is right most often on the training shapes."""
    flops = np.array([2.0 * s["M"] * s["N"] * s["K"] for s in train_shapes])
    gpu_wins = np.array([truth[shape_key(s)]["cuda"] < truth[shape_key(s)]["cpu"] for s in train_shapes])
    candidates = np.concatenate([[0.0], np.sort(flops), [np.inf]])
    accuracy = [np.mean((flops > t) == gpu_wins) for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=int, default=40, help="matmul shapes, each measured on both targets")
    parser.add_argument("--dims", default=",".join(map(str, DIMS)), help="the sizes M, N and K are drawn from")
    parser.add_argument("--holdout", type=float, default=0.35)
    parser.add_argument("--schedules", type=int, default=32, help="random schedules measured per shape and target")
    parser.add_argument("--gpu-configs", type=int, default=64, help="the shared pool the GPU tasks draw from")
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=8, help="the model's top schedules measured per held-out shape and target")
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--accelerator", default="auto", help="Lightning's, for training the cost model")
    parser.add_argument("--snapshot", help="a folder with placement_{tasks,measurements}.parquet: skip the telemetry")
    parser.add_argument("--no-measure", action="store_true", help="decide only; the truth is the telemetry's random schedules")
    parser.add_argument("--operands", choices=("device", "host"), default="device",
                        help="host: the operands start in host memory, so offloading pays their copies (measured here; "
                             "predicted by a latency + bandwidth model fitted here)")
    parser.add_argument("--copies", help="with --operands host: a JSON of the copy model and every shape's measured "
                                         "copies, read when it exists (no GPU needed then), else measured and written")
    parser.add_argument("--copies-only", action="store_true", help="measure and write --copies, then stop")
    parser.add_argument("--prior", help="another machine's telemetry (a folder like --snapshot's): its model as is, "
                             "fine-tuned here, and pooled with this machine's, beside the others")
    parser.add_argument("--fine-tune-epochs", type=int, default=30, help="with --prior (compiler_transfer.py's default)")
    parser.add_argument("--fine-tune-lr", type=float, default=1e-3, help="with --prior")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import yaml

    from aiprim import primitives
    from aiprim.primitives.compiler._autotune import measure_schedules
    from aiprim.primitives.compiler._evaluate import fit_peers
    from aiprim.primitives.compiler._machine import recorded_caches
    from aiprim.primitives.compiler._measure import cpu_target
    from aiprim.primitives.compiler._placement import place, placement_report
    from aiprim.primitives.compiler._source import task_id_of
    from aiprim.primitives.compiler._triton import gpu_available

    summary = {"command": " ".join(["benchmarks/compiler_placement.py"] + sys.argv[1:]),
               "machine": f"{platform.processor() or platform.machine()}, CPU target {cpu_target()}", "seconds": {}}
    copies_known = args.operands == "host" and args.copies and Path(args.copies).exists() and not args.copies_only
    if not args.snapshot or not args.no_measure or (args.operands == "host" and not copies_known):
        why_not = gpu_available()
        if why_not:
            print(f"compiler_placement: {why_not}; run it where a CUDA GPU is, or pass --snapshot DIR --no-measure",
                  file=sys.stderr)
            return 2
        import torch

        summary["gpu"] = torch.cuda.get_device_name(0)

    started = time.perf_counter()
    tables = read_telemetry(Path(args.snapshot)) if args.snapshot else measure_telemetry(
        draw_shapes(args.shapes, args.seed, [int(d) for d in args.dims.split(",")]), args, out)
    summary["seconds"]["telemetry"] = time.perf_counter() - started
    summary["targets"] = sorted(tables["tasks"]["target"].dropna().unique().tolist())
    # The CPU side is predicted for the caches of the machine that measured it, which with --snapshot need not
    # be this one (before stop 34, offline decisions used this machine's).
    try:
        cpu_caches = recorded_caches(tables["tasks"], "matmul")
    except ValueError as error:
        raise SystemExit(f"compiler_placement: {error}") from None
    summary["cpu_caches"] = cpu_caches
    best = best_measured(tables)
    shapes = [json.loads(s) for s in tables["tasks"].loc[tables["tasks"]["kernel"] == "matmul", "shape"]]
    truth = {}
    for s in shapes:
        cpu, gpu = best.get(task_id_of("matmul", s)), best.get(task_id_of("triton_matmul", s))
        if cpu is not None and gpu is not None:
            truth[shape_key(s)] = {"cpu": cpu, "cuda": gpu}
    shapes = [s for s in shapes if shape_key(s) in truth]
    copies, copy_model = {}, None
    if args.operands == "host":  # the GPU's truth pays the copies; the models' predictions add the fitted copy model
        if copies_known:
            saved = json.loads(Path(args.copies).read_text())
            copy_model = copy_model_from(saved["copy_model"]["sizes"], saved["copy_model"]["seconds"])
            copies = saved["copies"]
        else:
            copy_model = fit_copy_model()
            copies = {shape_key(s): copy_seconds(s) for s in shapes}
            if args.copies:
                Path(args.copies).write_text(json.dumps({"gpu": summary.get("gpu"), "copy_model": copy_model,
                                                         "copies": copies}, indent=1))
            if args.copies_only:
                log(f"copies of {len(copies)} shapes written to {args.copies}")
                return 0
        for key, seconds in copies.items():
            truth[key] = {"cpu": truth[key]["cpu"], "cuda": truth[key]["cuda"] + seconds}
        summary["copy_model"] = copy_model
        log(f"copy model: latency {copy_model['latency_s'] * 1e6:.1f} us, {copy_model['bytes_per_s'] / 1e9:.1f} GB/s; "
            f"measured copies {min(copies.values()) * 1e6:.0f}-{max(copies.values()) * 1e6:.0f} us")
    rng = np.random.default_rng(args.seed + 1)
    order = rng.permutation(len(shapes))
    n_held = max(1, int(round(len(shapes) * args.holdout)))
    held = [shapes[i] for i in order[:n_held]]
    train_shapes = [shapes[i] for i in order[n_held:]]
    held_ids = {task_id_of(k, s) for s in held for k in ("matmul", "triton_matmul")}
    train = {name: t[~t["task_id"].isin(held_ids)] for name, t in tables.items()}
    log(f"{len(shapes)} shapes measured on both targets: {len(train_shapes)} for training, {len(held)} held out")

    prim = primitives.get("compiler")
    params = {**yaml.safe_load((ROOT / "configs" / "compiler.yaml").read_text())["train"], "max_epochs": args.epochs}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runtime = prim.train_runtime(train, params, Path(tmp), seed=0, accelerator=args.accelerator)
    summary["seconds"]["train"] = time.perf_counter() - started
    predictors = {"learned": runtime, "xgboost": xgboost_predictor(fit_peers(train)["xgboost"])}
    if args.prior:
        started = time.perf_counter()
        prior, summary["prior"] = prior_telemetry(Path(args.prior), held_ids)
        tuned = {**params, "max_epochs": args.fine_tune_epochs, "lr": args.fine_tune_lr}
        predictors.update(prior_models(prim, prior, train, params, tuned, args.accelerator))
        summary["seconds"]["prior"] = time.perf_counter() - started
    threshold = threshold_rule(train_shapes, truth)
    summary["threshold_flops"] = threshold

    started = time.perf_counter()
    rows = []
    for n, s in enumerate(held, start=1):
        task = {"kernel": "matmul", "shape": s}
        decisions = {name: place(task, model, ["cpu", "cuda"], args.candidates, args.seed, {"cpu": cpu_caches})
                     for name, model in predictors.items()}
        row = {"shape": shape_key(s), "flops": 2.0 * s["M"] * s["N"] * s["K"], "random_best": dict(truth[shape_key(s)]),
               "best": dict(truth[shape_key(s)])}
        for name, d in decisions.items():
            predicted = {t: r["predicted_s"] for t, r in d["targets"].items()}
            if copy_model is not None:
                predicted["cuda"] += predicted_copy_seconds(s, copy_model)
            row[name] = {"choice": min(predicted, key=predicted.get), "predicted_s": predicted}
        if copy_model is not None:
            row["copy_s"] = {"measured": copies[shape_key(s)], "predicted": predicted_copy_seconds(s, copy_model)}
        if not args.no_measure:
            row["trials"] = {}
            for target, d in decisions["learned"]["targets"].items():
                chosen = [d["pool"][i] for i in d["order"][:args.trials]]
                _, measured = measure_schedules(d["kernel"], s, chosen, args.seed, {"repeats": 5, "time_limit_s": 0.5})
                times = [t for t, _ in measured]
                row["trials"][target] = {"predicted_s": [float(d["predicted"][i]) for i in d["order"][:args.trials]],
                                         "measured_s": times}
                ok = [t + (copies.get(shape_key(s), 0.0) if target == "cuda" else 0.0) for t in times if t is not None]
                if ok:
                    row["best"][target] = min(row["best"][target], min(ok))
        rows.append(row)
        log(f"{n}/{len(held)} {row['shape']}: cpu {row['best']['cpu'] * 1e3:.4g} ms, cuda {row['best']['cuda'] * 1e3:.4g} ms; "
            f"learned -> {row['learned']['choice']}, xgboost -> {row['xgboost']['choice']}")
    summary["seconds"]["decide_and_measure"] = time.perf_counter() - started

    truths = [r["best"] for r in rows]
    methods = {name: [r[name]["choice"] for r in rows] for name in predictors}
    methods["threshold"] = ["cuda" if r["flops"] > threshold else "cpu" for r in rows]
    methods["always_cpu"] = ["cpu"] * len(rows)
    methods["always_cuda"] = ["cuda"] * len(rows)
    summary["placement"] = {name: placement_report(choices, truths) for name, choices in methods.items()}
    summary["models"] = list(predictors)
    summary["calibration"] = calibration(rows, summary["models"])
    summary["held_out"] = rows
    name = "compiler_placement_host" if copy_model is not None else "compiler_placement"
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2))
    text = markdown(summary)
    (out / f"{name}.md").write_text(text)
    print(text)
    return 0


def calibration(rows, models: list[str]) -> dict:
    """Per target: MAPE of the predicted best time (each model's best-predicted schedule) against the best measured."""
    out = {}
    for name in models:
        for target in ("cpu", "cuda"):
            errors = [abs(r[name]["predicted_s"][target] - r["best"][target]) / r["best"][target] for r in rows]
            out[f"{name}_{target}_mape"] = float(np.mean(errors)) if errors else float("nan")
    return out


def markdown(s: dict) -> str:
    models = s["models"]
    lines = [f"Machine: {s['machine']}; GPU {s.get('gpu', '-')}. Targets: {', '.join(s['targets'])}. "
             f"Held-out shapes: {s['placement']['learned']['tasks']}. Threshold rule: offload above "
             f"{s['threshold_flops']:.3g} flops.", "",
             "| placement | right | geomean regret | worst regret |", "|---|---|---|---|"]
    for name, r in s["placement"].items():
        lines.append(f"| {name} | {r['accuracy']:.0%} | {r['geomean_regret']:.3f} | {r['max_regret']:.2f} |")
    if s.get("copy_model"):
        m = s["copy_model"]
        lines += ["", f"Operands in host memory: the GPU's times include copying A and B in and C out (measured per "
                  f"shape); the models add a copy model fitted here: {m['latency_s'] * 1e6:.1f} us per copy + "
                  f"bytes / {m['bytes_per_s'] / 1e9:.1f} GB/s."]
    lines += ["", "Predicted best time against the best measured, per target (MAPE): " + ", ".join(
        f"{k.replace('_mape', '')} {v:.0%}" for k, v in s["calibration"].items()), "",
              "| shape | flops | CPU best ms | GPU best ms | " + " | ".join(models) + " |",
              "|---|---|---|---|" + "---|" * len(models)]
    for r in sorted(s["held_out"], key=lambda r: r["flops"]):
        lines.append(f"| {r['shape']} | {r['flops']:.3g} | {r['best']['cpu'] * 1e3:.4g} | {r['best']['cuda'] * 1e3:.4g} | "
                     + " | ".join(r[name]["choice"] for name in models) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
