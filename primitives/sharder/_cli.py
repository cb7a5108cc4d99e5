"""The sharder's own ``aiprim`` verb: ``replay``, the held-out trace on live PostgreSQL shards."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("aiprim.sharder")


def add_commands(subparsers) -> dict:
    rp = subparsers.add_parser("replay", help="sharder: replay a snapshot's held-out transactions on live PostgreSQL shards "
                                              "(two-phase commit), the learned placement beside its peers")
    rp.add_argument("--snapshot", required=True, help="a sharder snapshot directory")
    source = rp.add_mutually_exclusive_group()
    source.add_argument("--model", default="champion", help="champion | challenger | VERSION | RUN_ID (the registry's)")
    source.add_argument("--runtime", help="a runtime directory written by export_runtime, instead of the registry")
    rp.add_argument("--deployment", help="whose champion/challenger --model names (default: default)")
    rp.add_argument("--transactions", type=int, default=2000, help="the first N held-out transactions")
    rp.add_argument("--peers", default="hash,manual_warehouse,schism", help="comma-separated peers to replay beside it")
    rp.add_argument("--json", action="store_true", help="print the result as one JSON object")
    rp.add_argument("--profile")
    return {"replay": replay_command}


def replay_command(args, cfg: dict) -> int:
    result = replay_snapshot(Path(args.snapshot), cfg, model=None if args.runtime else args.model,
                             runtime=args.runtime, transactions=args.transactions,
                             peers=[p for p in args.peers.split(",") if p], deployment=args.deployment)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'placement':<18}{'distributed':>12}{'txn/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, m in result["placements"].items():
        print(f"{name:<18}{m['distributed_share']:>12.3f}{m['txn_per_s']:>10.0f}{m['p50_ms']:>9.2f}{m['p99_ms']:>9.2f}")
    return 0


def replay_snapshot(snapshot: Path, cfg: dict, model: str | None = "champion", runtime: str | None = None,
                    transactions: int = 2000, peers: list[str] = (), deployment: str | None = None) -> dict:
    from ... import primitives
    from .._snapshot import check_snapshot, read_tables
    from ._peers import PEERS

    if transactions < 1:
        raise ValueError(f"--transactions: at least 1, not {transactions}")
    prim = primitives.get("sharder")
    tables = read_tables(check_snapshot(snapshot, "sharder"), prim.schema)
    fraction = float(cfg.get("promotion", {}).get("holdout_fraction", 0.2))
    training, held_out = prim.split(tables, fraction)
    if runtime is not None:
        learned = prim.load_runtime(Path(runtime))
    else:
        from ... import registry

        learned = registry.load_runtime("sharder", model, deployment)
    placers = {"learned": learned}
    for name in peers:
        if name not in PEERS:
            raise ValueError(f"replay: unknown peer {name!r} (known: {', '.join(PEERS)})")
        placer = PEERS[name](training)
        if getattr(placer, "available", True):
            placers[name] = placer
    placements = {name: placer.place(held_out["items"], held_out["shards"]) for name, placer in placers.items()}
    from ._live import replay

    log.info("replaying %d transactions of %s on %d shards", transactions, snapshot.name, len(held_out["shards"]))
    return {"snapshot": str(snapshot), "model": runtime or model, "transactions": transactions,
            "placements": replay(held_out, placements, transactions, training["accesses"])}
