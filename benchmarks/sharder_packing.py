"""Benchmark: the sharder's packing (``primitives/sharder/_packing.py``) before and after its repair pass was
rewritten, side by side on the same inputs.

Deployments are drawn from the transfer family (``_transfer.draw_deployment``, fixed seeds) and built by the
construction the transfer decode runs (``construct``: no gradient steps) with a few knob settings. Each case
is built twice, once with every ``pack_groups`` call going to the packing of ``--before`` (a git revision:
the old file is read with ``git show``, so this runs from a clean clone) and once with the working tree's.
Reported per case: the packing's seconds (all calls of a build, and the slowest), the peak load ratio the
export's packing leaves (max over shards and both resources of used / capacity share on the training loads;
the bound is 1 + pack_slack), the build's seconds, and on the held-out newest 20% the sharder's
``distributed_txn_rate`` and ``peak_to_mean_load`` (after label propagation and the export's choice to move
or keep rows where they are, and over rows the packing never sees: a different packing changes both). Then every ``pack_groups`` call of the after builds (the coarse partition's random
starts and agglomeration, the export) is replayed with both packings on identical inputs: seconds and
peak, worse / better / equal.

``no key`` (min_key_score 2, more than any key column explains) packs rows as groups, thousands of them:
what every deployment without a key column packs, and what the transfer benchmark's drawn TPC-C
deployments packed before the key-column rule of 8bb2f34 (seed 5010: a 17.8 s decode, most of it here).
Pinned to one core.

    .venv/bin/python benchmarks/sharder_packing.py            # 8 cases, ~4 min on one core
    .venv/bin/python benchmarks/sharder_packing.py --quick    # 3 cases
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sharder import pinned_sharder  # noqa: E402  (one core, the sharder)

BEFORE = "e9acaff3e1e1baf85ce4d2bfd4df7f35587d35aa"  # _packing.py before its repair pass was rewritten
NO_KEY = 2.0
# (deployment seed, clusters_per_shard, min_key_score, pack_slack): the transfer benchmark's slow decodes and
# the knob settings of its grid that pack the most.
CASES = [(5010, 8, NO_KEY, 0.08), (5010, 2, NO_KEY, 0.03), (5000, 8, NO_KEY, 0.08), (5001, 4, NO_KEY, 0.01),
         (5011, 4, 0.15, 0.03), (1000, 4, 0.15, 0.01), (5007, 4, 0.15, 0.01), (5010, 8, 0.15, 0.08)]
QUICK = [CASES[0], CASES[4], CASES[7]]


def packing_at(revision: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{revision}:primitives/sharder/_packing.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(f"packing_{revision}")
    exec(compile(source, f"{revision}:primitives/sharder/_packing.py", "exec"), module.__dict__)
    return module


def peak_ratio(shard: np.ndarray, accesses: np.ndarray, size: np.ndarray, share: np.ndarray) -> float:
    load = np.column_stack([accesses / max(accesses.sum(), 1e-12), size / max(size.sum(), 1e-12)])
    used = np.zeros((len(share), 2))
    np.add.at(used, shard, load)
    return float((used / share[:, None]).max())


class Recorder:
    """Stands in for ``pack_groups``: calls ``implementation``, times it, and keeps its inputs and peak."""

    def __init__(self, implementation, keep_inputs: bool):
        self.implementation, self.keep_inputs, self.calls = implementation, keep_inputs, []

    def __call__(self, preference, accesses, size, share, slack):
        started = time.perf_counter()
        shard = self.implementation(preference, accesses, size, share, slack)
        seconds = time.perf_counter() - started
        self.calls.append({"seconds": seconds, "groups": len(accesses), "bound": 1.0 + slack,
                           "peak": peak_ratio(shard, accesses, size, share),
                           "inputs": (preference, accesses, size, share, slack) if self.keep_inputs else None})
        return shard


def main() -> int:
    # Every folder this run makes (trained and decoded runtimes) lands in one that is removed at exit.
    scratch = tempfile.TemporaryDirectory(prefix="aiprim-sharder-packing-")
    tempfile.tempdir = scratch.name
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=BEFORE, help="git revision of the packing to compare against")
    parser.add_argument("--quick", action="store_true", help=f"{len(QUICK)} cases instead of {len(CASES)}")
    parser.add_argument("--transactions", default="6000,16000", help="as benchmarks/sharder_transfer.py draws")
    parser.add_argument("--out", help="also write the results to OUT.json and OUT.md")
    args = parser.parse_args()
    prim, _, _, _ = pinned_sharder()
    from aiprim.primitives.sharder import _packing
    from aiprim.primitives.sharder._metrics import evaluate_placers
    from aiprim.primitives.sharder._model import SharderDataModule  # noqa: F401  (imports off the clock)

    versions = {"before": packing_at(args.before).pack_groups, "after": _packing.pack_groups}
    model = prim.transfer_model()
    transactions = tuple(int(x) for x in args.transactions.split(","))
    rows, replay = [], []
    for seed, clusters, key_score, slack in QUICK if args.quick else CASES:
        tables = model.draw_deployment(seed, transactions)
        train, held_out = prim.split(tables, 0.2)
        knobs = {"clusters_per_shard": clusters, "min_key_score": key_score, "pack_slack": slack}
        row = {"seed": seed, "shards": len(tables["shards"]), **knobs}
        for name, implementation in versions.items():
            recorder = Recorder(implementation, keep_inputs=name == "after")
            _packing.pack_groups = recorder
            try:
                started = time.perf_counter()
                runtime = model.construct(train, knobs, Path(tempfile.mkdtemp(prefix="aiprim-sharder-packing-")))
                build = time.perf_counter() - started
            finally:
                _packing.pack_groups = versions["after"]
            metrics = evaluate_placers({name: runtime}, held_out, train, disruption_trials=0, reshard_budget=None)[name]
            shipped = recorder.calls[-1]  # the export's packing: group_placement runs last
            row[name] = {"pack_seconds": sum(c["seconds"] for c in recorder.calls),
                         "slowest_call_seconds": max(c["seconds"] for c in recorder.calls),
                         "calls": len(recorder.calls), "groups": shipped["groups"], "peak": shipped["peak"],
                         "bound": shipped["bound"], "build_seconds": build,
                         "distributed_txn_rate": metrics["distributed_txn_rate"],
                         "peak_to_mean_load": metrics["peak_to_mean_load"]}
            if name == "after":
                replay += [c["inputs"] for c in recorder.calls]
        rows.append(row)
        b, a = row["before"], row["after"]
        print(f"{seed} ({row['shards']} shards, {clusters}/shard, key {'none' if key_score == NO_KEY else key_score}, "
              f"slack {slack}, {a['groups']} groups): packing {b['pack_seconds']:.2f}s -> {a['pack_seconds']:.2f}s, "
              f"peak {b['peak']:.4f} -> {a['peak']:.4f}, distributed {b['distributed_txn_rate']:.4f} -> "
              f"{a['distributed_txn_rate']:.4f}", flush=True)

    timed = {name: [] for name in versions}
    peaks = {name: [] for name in versions}
    bounds = []
    for inputs in replay:
        bounds.append(1.0 + inputs[4])
        for name, implementation in versions.items():
            started = time.perf_counter()
            shard = implementation(*inputs)
            timed[name].append(time.perf_counter() - started)
            peaks[name].append(peak_ratio(shard, inputs[1], inputs[2], inputs[3]))
    bounds = np.array(bounds)
    # Under the bound is what packing asks for: how far below it is not a difference.
    excess = {name: np.maximum(np.array(p), bounds) - bounds for name, p in peaks.items()}
    difference = excess["after"] - excess["before"]

    lines = ["| deployment (knobs) | groups | packing s (slowest call) | peak / bound | build s | "
             "distributed_txn_rate | peak_to_mean_load |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        b, a = r["before"], r["after"]
        key = "no key" if r["min_key_score"] == NO_KEY else f"key >= {r['min_key_score']}"
        lines.append(
            f"| {r['seed']}, {r['shards']} shards ({r['clusters_per_shard']}/shard, {key}, slack {r['pack_slack']}) | "
            f"{a['groups']:,} | {b['pack_seconds']:.2f} ({b['slowest_call_seconds']:.2f}) -> {a['pack_seconds']:.2f} "
            f"({a['slowest_call_seconds']:.2f}) | {b['peak']:.4f} -> {a['peak']:.4f} / {a['bound']:.2f} | "
            f"{b['build_seconds']:.1f} -> {a['build_seconds']:.1f} | {b['distributed_txn_rate']:.4f} -> "
            f"{a['distributed_txn_rate']:.4f} | {b['peak_to_mean_load']:.3f} -> {a['peak_to_mean_load']:.3f} |")
    rate = {name: np.array([r[name]["distributed_txn_rate"] for r in rows]) for name in versions}
    lines += ["", f"distributed_txn_rate lower after in {(rate['after'] < rate['before'] - 1e-9).sum()} of {len(rows)} "
              f"cases, higher in {(rate['after'] > rate['before'] + 1e-9).sum()}; median after / before "
              f"{np.median(rate['after'] / np.maximum(rate['before'], 1e-9)):.3f}"]
    before_s, after_s = np.array(timed["before"]), np.array(timed["after"])
    lines += ["", f"every pack_groups call of the after builds, replayed with both ({len(replay)} calls):", "",
              "| packing | median s | max s | total s | peak over bound: worse / better / same than before | "
              "largest increase |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, seconds in (("before", before_s), ("after", after_s)):
        verdict = "-" if name == "before" else (f"{(difference > 1e-9).sum()} / {(difference < -1e-9).sum()} / "
                                                f"{(np.abs(difference) <= 1e-9).sum()}")
        largest = "-" if name == "before" else f"{max(difference.max(), 0.0):.4f}"
        lines.append(f"| {name} | {np.median(seconds):.4f} | {seconds.max():.3f} | {seconds.sum():.2f} | {verdict} | "
                     f"{largest} |")
    lines.append(f"| after / before | {np.median(after_s) / np.median(before_s):.2f}x | "
                 f"{after_s.max() / before_s.max():.2f}x | {after_s.sum() / before_s.sum():.2f}x | | |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(text + "\n")
        calls = {name: {"seconds": timed[name], "peak": peaks[name]} for name in versions}
        out.with_suffix(".json").write_text(json.dumps(
            {"command": "python benchmarks/sharder_packing.py" + " ".join([""] + sys.argv[1:]), "before": args.before,
             "cases": rows, "calls": {**calls, "bound": bounds.tolist()}}, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
