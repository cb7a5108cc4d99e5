"""Benchmark: the sharder's transfer decode (issue 13: "decoding a primitive takes under 2 s on one CPU core"),
the code of ``--before`` (a git revision) beside the working tree's, on the same deployments and knobs.

Deployments are drawn from the transfer family (``_transfer.draw_deployment``: the transfer benchmark's
held-out seeds, 5000 on) and each is decoded with every knob setting of ``--knobs``, once with the sharder's
``_trace.py``, ``_features.py``, ``_refine.py`` and ``_model.py`` of ``--before`` (read with ``git show``, so
this runs from a clean clone) and once with the working tree's, in alternating order. The decode is ``SharderTransfer.decode`` itself, its
transfer model pinned to the one setting (ranking the grid is microseconds; what costs is building the
sharder). Reported: ``decode_seconds`` (median and max, per version, rows-as-groups deployments apart:
those whose decoded sharder has no key column, one placement group per row), and whether the two
sharders are identical (packed table, rows that left their group, clusters, kernel); where not, the
distributed_txn_rate and peak_to_mean_load of both on the held-out newest 20%, worse / better / equal.
``--before rows-off`` compares the working tree with single-row moves off (``row_moves``) instead. Pinned
to one core.

    .venv/bin/python benchmarks/sharder_decode.py                # 12 deployments x 3 settings, ~1 min
    .venv/bin/python benchmarks/sharder_decode.py --deployments 4 --knobs 4,0.15,0.03
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from sharder import pinned_sharder  # noqa: E402  (one core, the sharder)

PACKAGE = "aiprim.primitives.sharder"
CHANGED = ("_trace", "_features", "_refine", "_model")  # in import order: each imports the ones before it
# clusters_per_shard, min_key_score, pack_slack: the configured setting and the grid's corners that a fitted
# transfer model decodes most (benchmarks/results/sharder_transfer.json).
KNOBS = "4,0.15,0.03;8,0.3,0.08;2,0.05,0.01"
COMPARED = ("group_hash", "group_shard", "group_cluster", "row_hash", "row_shard", "cluster_shard", "prototypes",
            "cluster_bias")


@contextlib.contextmanager
def installed(modules: dict[str, types.ModuleType]):
    """``modules`` stand in for the sharder's own under their names while inside (imports in function
    bodies, as the construction's are, find them)."""
    saved = {name: sys.modules[f"{PACKAGE}.{name}"] for name in modules}
    sys.modules.update({f"{PACKAGE}.{name}": module for name, module in modules.items()})
    try:
        yield
    finally:
        sys.modules.update({f"{PACKAGE}.{name}": module for name, module in saved.items()})


def modules_at(revision: str) -> dict[str, types.ModuleType]:
    """The sharder's ``CHANGED`` modules as they were at ``revision``, each importing the others' old versions."""
    import importlib

    for name in CHANGED:
        importlib.import_module(f"{PACKAGE}.{name}")
    old: dict[str, types.ModuleType] = {}
    for name in CHANGED:
        path = f"primitives/sharder/{name}.py"
        source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=REPO, check=True, capture_output=True,
                                text=True).stdout
        module = types.ModuleType(f"{PACKAGE}.{name}")
        module.__package__ = PACKAGE
        with installed(old):
            exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)
        old[name] = module
    return old


@contextlib.contextmanager
def rows_off():
    """The working tree's construction with single-row moves off."""
    from aiprim.primitives.sharder import _transfer

    build = _transfer._datamodule

    def without_row_moves(tables, seed):
        datamodule = build(tables, seed)
        datamodule.row_moves = False
        return datamodule

    _transfer._datamodule = without_row_moves
    try:
        yield
    finally:
        _transfer._datamodule = build


def pinned_state(setting: np.ndarray, descriptor: np.ndarray):
    """A transfer model whose grid is ``setting`` alone: it decodes that setting for any deployment."""
    from aiprim.primitives.sharder._transfer import SharderTransferParams, SharderTransferState

    members = np.stack([descriptor, descriptor]).astype(np.float64)
    zeros = np.zeros((2, 1))
    return SharderTransferState(np.asarray([setting], dtype=np.float64), members, zeros, zeros, zeros + 1.0,
                                np.zeros(2), members[0], np.ones(members.shape[1]), 1.0, SharderTransferParams(),
                                2, 0.0)


def same_sharder(a, b) -> bool:
    return a.key_column == b.key_column and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in COMPARED)


def summary(seconds: list[float]) -> str:
    return f"median {np.median(seconds):.3f} s, max {np.max(seconds):.3f} s" if seconds else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="HEAD", help="git revision of the code to compare against, or rows-off")
    parser.add_argument("--deployments", type=int, default=12)
    parser.add_argument("--first-seed", type=int, default=5000)
    parser.add_argument("--knobs", default=KNOBS, help="settings to decode, ';'-separated clusters,min_key_score,slack")
    parser.add_argument("--transactions", default="6000,16000", help="as benchmarks/sharder_transfer.py draws")
    parser.add_argument("--out", help="also write the results to OUT.json")
    args = parser.parse_args()
    prim, _, _, _ = pinned_sharder()
    from aiprim.primitives.sharder._metrics import evaluate_placers

    if args.before == "rows-off":
        versions = {"before": rows_off, "after": contextlib.nullcontext}
    else:
        old = modules_at(args.before)
        versions = {"before": lambda: installed(old), "after": contextlib.nullcontext}
    model = prim.transfer_model()
    settings = [np.array([float(x) for x in s.split(",")]) for s in args.knobs.split(";")]
    transactions = tuple(int(x) for x in args.transactions.split(","))
    rows = []
    with tempfile.TemporaryDirectory(prefix="aiprim-sharder-decode-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.deployments):
            tables = model.draw_deployment(seed, transactions)
            train, held_out = prim.split(tables, 0.2)
            descriptor = prim.describe_deployment(train)
            if not rows:  # imports and first calls off the clock
                model.decode(pinned_state(settings[0], descriptor), descriptor, train, Path(tmp) / "warm")
            for k, setting in enumerate(settings):
                state = pinned_state(setting, descriptor)
                runtimes = {}
                order = list(versions) if (len(rows) % 2 == 0) else list(reversed(versions))
                for name in order:
                    with versions[name]():
                        runtimes[name] = model.decode(state, descriptor, train, Path(tmp) / f"{seed}-{k}-{name}")
                before, after = runtimes["before"], runtimes["after"]
                row = {"seed": seed, "rows": len(tables["items"]), "shards": len(tables["shards"]),
                       "knobs": after.knobs, "key_column": after.key_column, "groups": len(after.group_hash),
                       "seconds": {name: r.decode_seconds for name, r in runtimes.items()},
                       "identical": same_sharder(before, after)}
                if not row["identical"]:
                    metrics = evaluate_placers(runtimes, held_out, train, disruption_trials=0, reshard_budget=None)
                    row["metrics"] = {name: {m: metrics[name][m] for m in ("distributed_txn_rate", "peak_to_mean_load")}
                                      for name in runtimes}
                rows.append(row)
                print(f"{seed} ({row['rows']} rows, {row['shards']} shards) {row['knobs']}: key {row['key_column']}, "
                      f"{row['groups']} groups: decode {row['seconds']['before']:.2f} s -> "
                      f"{row['seconds']['after']:.2f} s"
                      f"{'' if row['identical'] else ' DIFFERENT ' + json.dumps(row['metrics'])}", flush=True)

    lines = [f"decode_seconds on one core, {len(rows)} decodes ({args.deployments} deployments x {len(settings)} "
             f"settings), {args.before} -> working tree:"]
    rows_as_groups = [r for r in rows if r["key_column"] is None]
    keyed = [r for r in rows if r["key_column"] is not None]
    for label, chosen in (("all", rows), ("rows as groups (no key column)", rows_as_groups), ("keyed", keyed)):
        if not chosen:
            continue
        before = [r["seconds"]["before"] for r in chosen]
        after = [r["seconds"]["after"] for r in chosen]
        ratio = np.array(after) / np.array(before)
        lines.append(f"  {label} ({len(chosen)}): before {summary(before)}; after {summary(after)}; "
                     f"after / before median {np.median(ratio):.2f}x, max {ratio.max():.2f}x")
    differing = [r for r in rows if not r["identical"]]
    lines.append(f"identical sharders: {len(rows) - len(differing)} of {len(rows)}")
    for metric in ("distributed_txn_rate", "peak_to_mean_load"):
        if differing:
            delta = np.array([r["metrics"]["after"][metric] - r["metrics"]["before"][metric] for r in differing])
            lines.append(f"  {metric} where they differ: worse {(delta > 1e-12).sum()}, "
                         f"better {(delta < -1e-12).sum()}, equal {(np.abs(delta) <= 1e-12).sum()}")
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(
            {"command": "python benchmarks/sharder_decode.py" + " ".join([""] + sys.argv[1:]), "before": args.before,
             "rows": rows, "summary": lines}, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
