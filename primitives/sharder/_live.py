"""Live replay: the held-out trace run on real PostgreSQL shards, with two-phase commit.

The metrics count distributed transactions; this measures what they cost.
One throwaway PostgreSQL server (``query._postgres.LocalPostgres``, on
127.0.0.1 only) holds one database per shard. For each placement, every
shard database is loaded with the rows placed on it (rows of replicated
tables on all of them), then the first transactions of the held-out trace
run one after another from one client: each access a point read or an
upsert on the shard of its row (a replicated read on the transaction's home
shard), committed plainly when the transaction stayed on one shard, and by
two-phase commit (PREPARE TRANSACTION on every shard, then COMMIT PREPARED)
when it did not. Reported per placement: throughput, latency percentiles and
the share of transactions that needed the distributed commit.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ._trace import Shards, read_only_tables


def replay(tables: dict, placements: dict[str, np.ndarray], transactions: int = 2000,
           training_accesses: pd.DataFrame | None = None, warmup: int = 200) -> dict[str, dict]:
    """{placement: metrics} for the first ``transactions`` of ``tables["accesses"]`` (time order).

    Before any placement is measured, the first ``warmup`` of them run once, unmeasured, with the first
    placement: the server's caches and the connections' prepared statements are then warm for every
    placement alike, not for all but the first (without it, in one replay of 500 transactions, the first
    placement ran 469 transactions a second against 592-596 for the others, with fewer distributed)."""
    import psycopg

    from ..query._postgres import LocalPostgres

    items, shards = tables["items"], Shards.from_frame(tables["shards"])
    accesses = tables["accesses"].sort_values("ts", kind="stable")
    chosen = pd.unique(accesses["txn_id"])[:transactions]
    trace = accesses[accesses["txn_id"].isin(set(chosen))]
    replicated = read_only_tables(items, tables["accesses"], training_accesses)
    row_of = pd.Index(items["item_id"]).get_indexer(trace["item_id"])
    is_replicated = items["table"].isin(replicated).to_numpy()[row_of]
    touched = np.unique(row_of)
    settings = {"max_prepared_transactions": "32", "max_connections": "64", "shared_buffers": "64MB"}
    results = {}
    with LocalPostgres(settings=settings) as server:
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            for shard in shards.shard_id:
                admin.execute(f"CREATE DATABASE shard_{int(shard)}")
        base = server.dsn.rsplit("/", 1)[0]
        connections = {int(s): psycopg.connect(f"{base}/shard_{int(s)}") for s in shards.shard_id}
        try:
            for conn in connections.values():
                conn.execute("CREATE TABLE rows (item_id text PRIMARY KEY, value bigint NOT NULL)")
                conn.commit()
            if warmup and placements:
                first = np.isin(trace["txn_id"].to_numpy(), chosen[:warmup])
                _replay_one(connections, items, trace[first], row_of[first], is_replicated[first], touched,
                            np.asarray(next(iter(placements.values())), dtype=np.int64), shards)
            for name, shard_of_item in placements.items():
                results[name] = _replay_one(connections, items, trace, row_of, is_replicated, touched,
                                            np.asarray(shard_of_item, dtype=np.int64), shards)
        finally:
            for conn in connections.values():
                conn.close()
    return results


def _replay_one(connections: dict, items, trace, row_of, is_replicated, touched, shard_of_item, shards) -> dict:
    ids = items["item_id"].to_numpy(dtype=object)
    replicated_rows = touched[is_replicated_rows(items, touched, row_of, is_replicated)]
    for shard, conn in connections.items():
        conn.execute("TRUNCATE rows")
        mine = touched[shard_of_item[touched] == shard]
        with conn.cursor().copy("COPY rows (item_id, value) FROM STDIN") as copy:
            for item in np.union1d(mine, replicated_rows):
                copy.write_row((ids[item], 0))
        conn.commit()
    latencies, distributed = [], 0
    txn_codes = pd.factorize(trace["txn_id"])[0]
    ops = trace["op"].to_numpy(dtype=object)
    boundaries = np.flatnonzero(np.diff(txn_codes)) + 1
    started = time.perf_counter()
    for number, span in enumerate(np.split(np.arange(len(trace)), boundaries)):
        rows, kinds, local = row_of[span], ops[span], is_replicated[span]
        partitioned = shard_of_item[rows[~local]]
        home = int(partitioned[0]) if len(partitioned) else int(shards.shard_id[0])
        where = np.where(local, home, shard_of_item[rows])
        involved = sorted(set(where.tolist()))
        begin = time.perf_counter()
        two_phase = len(involved) > 1
        if two_phase:
            for shard in involved:
                connections[shard].tpc_begin(connections[shard].xid(1, f"t{number}", f"s{shard}"))
        for row, kind, shard in zip(rows, kinds, where):
            conn = connections[int(shard)]
            if kind == "w":
                conn.execute("INSERT INTO rows VALUES (%s, 1) ON CONFLICT (item_id) DO UPDATE SET value = rows.value + 1",
                             (ids[row],))
            else:
                conn.execute("SELECT value FROM rows WHERE item_id = %s", (ids[row],)).fetchone()
        if two_phase:
            for shard in involved:
                connections[shard].tpc_prepare()
            for shard in involved:
                connections[shard].tpc_commit()
            distributed += 1
        else:
            connections[involved[0]].commit()
        latencies.append(time.perf_counter() - begin)
    elapsed = time.perf_counter() - started
    latency = np.asarray(latencies) * 1e3
    return {"transactions": len(latencies), "distributed_share": distributed / max(len(latencies), 1),
            "txn_per_s": len(latencies) / max(elapsed, 1e-9), "p50_ms": float(np.percentile(latency, 50)),
            "p99_ms": float(np.percentile(latency, 99)), "mean_ms": float(latency.mean())}


def is_replicated_rows(items, touched, row_of, is_replicated) -> np.ndarray:
    """Which of the touched rows belong to replicated tables (they are loaded on every shard)."""
    replicated = np.zeros(len(items), dtype=bool)
    replicated[row_of[is_replicated]] = True
    return replicated[touched]
