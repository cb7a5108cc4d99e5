"""Benchmark: the learned query optimizer beside native, the best single arm and the per-query oracle.

For each engine (DuckDB embedded, and a PostgreSQL server this script starts on
127.0.0.1 and stops), round by round as the pipeline runs them: the embedded
source draws new queries (the seed moves with the round) and runs them, every
arm in round 0 and on-policy afterwards (native, the previous round's model's
choice, a Thompson sample, one random arm); the value model is trained with the
pipeline's training config on the training part of every round so far (the
experience window); then that round's held-out queries (unseen parameters of
seen templates, and unseen templates) are measured live under every arm (one
warm-up, median of 3) and each workload is scored on its own. The last round's
scores are the result; every round's totals are the learning curve.

    .venv/bin/python benchmarks/query.py                       # both engines, 3 rounds
    .venv/bin/python benchmarks/query.py --engines duckdb --quick --rounds 1

Results: benchmarks/results/query.json and a markdown table on stdout (pasted into RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]




def load_config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "configs" / "query.yaml").read_text())


def run_engine(engine: str, dsn: str | None, args, cfg: dict, workdir: Path) -> dict:
    from aiprim import primitives

    prim = primitives.get("query")
    source = {**cfg["source"], "engine": engine, "database_dir": str(workdir / "databases"),
              "skewed_scale": args.skewed_scale, "tpch_scale": args.tpch_scale, "queries_per_template": args.queries_per_template}
    if dsn:
        source["database_uri"] = dsn
    seed = int(source.pop("seed", 0))
    experience, policy_dir, out = [], None, {"rounds": []}
    for number in range(args.rounds):
        started = time.perf_counter()
        tables, extra = prim.generate({**source, "policy_dir": policy_dir, "load": number == 0}, seed + number)
        gathered_s = time.perf_counter() - started
        if args.keep:  # the telemetry, for looking at the model offline
            from aiprim.primitives._snapshot import write_snapshot

            kept = write_snapshot("query", prim.schema, tables, Path(args.keep) / engine, f"benchmarks/query.py ({engine})",
                                  {**extra, "round": number})
            print(f"[bench] telemetry kept in {kept}", file=sys.stderr, flush=True)
        train, held_out = prim.split(tables, args.holdout)
        experience.append((f"round{number}", train))
        started = time.perf_counter()
        policy_dir = workdir / f"runtime-{engine}-{number}"
        runtime = prim.train_runtime(prim.merge_experience(experience), cfg["train"], policy_dir, seed)
        train_s = time.perf_counter() - started
        scored = evaluate_round(prim, runtime, held_out, train, extra, cfg)
        out["rounds"].append({"round": number, "telemetry_s": gathered_s, "train_s": train_s,
                              "executions": len(tables["executions"]), "timed_out": int(tables["executions"]["timed_out"].sum()),
                              "train_queries": int(sum(len(t["queries"]) for _, t in experience)), "workloads": scored})
        totals = ", ".join(f"{w} {s['learned']['total_latency_ratio']:.3f} (oracle {s['peers']['oracle']['total_latency_ratio']:.3f})"
                           for w, s in scored.items())
        print(f"[bench] {engine} round {number}: learned total {totals}", file=sys.stderr, flush=True)
    out["workloads"] = out["rounds"][-1]["workloads"]
    return out


def evaluate_round(prim, runtime, held_out: dict, train: dict, extra: dict, cfg: dict) -> dict:
    from aiprim.primitives.query import workload_of

    scored = {}
    for workload in sorted({workload_of(t) for t in held_out["queries"]["template"]}):
        part = {**held_out, "queries": held_out["queries"][held_out["queries"]["template"].map(workload_of) == workload]}
        started = time.perf_counter()
        report = prim.evaluate(runtime, part, {**cfg["evaluate"], "manifest": extra, "training_tables": train})
        scored[workload] = {
            "held_out_queries": len(part["queries"]),
            "native_median_ms": float(sorted(q["native_ms"] for q in report["queries"])[len(report["queries"]) // 2]),
            "learned": {k: report["metrics"][k] for k in report["metrics"]},
            "peers": report["baselines"],
            "chosen_arms": _count(q["arm"] for q in report["queries"]),
            "oracle_arms": _count(q["best_arm"] for q in report["queries"]),
            "evaluate_s": time.perf_counter() - started,
        }
    return scored


def _count(values) -> dict:
    out = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items()))


def markdown(results: dict) -> str:
    lines = ["| engine | workload | held-out queries | native median ms | learned total | best single arm | oracle | "
             "worst query | p99 | oracle gap closed | ratio q-error median | planning overhead (ratio, ms) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for engine, res in results["engines"].items():
        for workload, w in res["workloads"].items():
            m, p = w["learned"], w["peers"]
            gap = f"{m['oracle_gap_closed']:.2f}" if "oracle_gap_closed" in m else "n/a (no gap)"
            lines.append(
                f"| {engine} | {workload} | {w['held_out_queries']} | {w['native_median_ms']:.1f} | {m['total_latency_ratio']:.3f} | "
                f"{p['best_single_arm']['total_latency_ratio']:.3f} | {p['oracle']['total_latency_ratio']:.3f} | "
                f"{m['worst_query_ratio']:.2f} | {m['p99_latency_ratio']:.2f} | {gap} | "
                f"{m.get('ratio_error_median', float('nan')):.2f} | "
                f"{m['planning_overhead_ratio']:.2f}, {m['planning_overhead_ms']:.1f} |")
            for split in ("unseen_params", "unseen_templates"):
                if f"total_latency_ratio_{split}" in m:
                    lines.append(f"| | ↳ {split.replace('_', ' ')} | | | {m[f'total_latency_ratio_{split}']:.3f} | | | "
                                 f"{m[f'worst_query_ratio_{split}']:.2f} | {m[f'p99_latency_ratio_{split}']:.2f} | "
                                 f"{m.get(f'oracle_gap_closed_{split}', float('nan')):.2f} | | |")
    lines += ["", "Learning curve (held-out total latency ratio of each round; its own new queries):", "",
              "| engine | round | train queries (window) | telemetry s | train s | " + " | ".join(
                  f"{w} learned / best single / oracle" for w in next(iter(results["engines"].values()))["workloads"]) + " |",
              "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in next(iter(results["engines"].values()))["workloads"]) + " |"]
    for engine, res in results["engines"].items():
        for r in res["rounds"]:
            cells = [f"{s['learned']['total_latency_ratio']:.3f} / {s['peers']['best_single_arm']['total_latency_ratio']:.3f} / "
                     f"{s['peers']['oracle']['total_latency_ratio']:.3f}" for s in r["workloads"].values()]
            lines.append(f"| {engine} | {r['round']} | {r['train_queries']} | {r['telemetry_s']:.0f} | {r['train_s']:.0f} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="duckdb,postgres")
    parser.add_argument("--skewed-scale", type=float, default=1.0)
    parser.add_argument("--tpch-scale", type=float, default=0.1)
    parser.add_argument("--queries-per-template", type=int, default=12)
    parser.add_argument("--holdout", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of telemetry and training (the curve)")
    parser.add_argument("--quick", action="store_true", help="small data, few queries: a smoke test")
    parser.add_argument("--keep", help="also write each engine's telemetry as a snapshot under this folder")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "query.json"))
    args = parser.parse_args()
    if args.quick:
        args.skewed_scale, args.tpch_scale, args.queries_per_template = 0.3, 0.02, 4
    from aiprim._console import setup_logging

    setup_logging()  # aiprim's one logging setup: step lines, known library noise filtered by category
    cfg = load_config()
    results = {"machine": {"cpu_count": __import__("os").cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version()},
               "args": vars(args), "evaluate": cfg["evaluate"], "train": cfg["train"], "engines": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aiprim-bench-query-") as tmp:
        for engine in args.engines.split(","):
            if engine == "postgres":
                from aiprim.primitives.query._postgres import LocalPostgres

                with LocalPostgres() as server:
                    results["engines"][engine] = run_engine(engine, server.dsn, args, cfg, Path(tmp))
            else:
                results["engines"][engine] = run_engine(engine, None, args, cfg, Path(tmp))
    results["wall_s"] = time.perf_counter() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    Path(args.out).with_suffix(".md").write_text(markdown(results) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
