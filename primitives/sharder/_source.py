"""The embedded telemetry source: a partitioned database's rows and its transaction trace.

One workload per snapshot (``workload``):

- ``tpcc``: TPC-C-like. Warehouses, their districts, customers and stock,
  the read-only ``item`` catalogue, and orders (one row per order, its lines
  folded into its size), with the spec's mix (NewOrder 45%, Payment 43%,
  OrderStatus, Delivery and StockLevel 4% each), 1% of order lines supplied by
  a remote warehouse, 15% of payments for a customer of a remote warehouse,
  and NURand skew over customers and items. Remote warehouses are uniform,
  as the spec draws them, unless ``regions`` > 0: then warehouses belong to
  hidden regions (by location, not by number) and ``remote_in_region`` of the
  remote work stays in the region. Orders entered during the trace are rows
  that did not exist before it. ``attr_warehouse`` and
  ``attr_district`` are set where the row has them.
- ``social``: Epinions-like. Users in communities of power-law sizes and
  activity, trust edges mostly inside a community, products popular in one
  community, and reviews; feeds read the reviews of trusted users, product
  pages read recent reviews. New reviews and trust edges appear during the
  trace. ``attr_user`` (the user a row belongs to) and ``attr_product``.
- ``kv``: YCSB-like keys, uniform (or Zipf with ``zipf_exponent`` > 0),
  multi-key transactions with no structure at all: the negative control on
  which nothing can beat hashing.

``current_shard`` is where the deployment of today put every row: the hash
peer's placement. Scale is configurable; the defaults fit the pipeline's
``make run``, and the ``small`` profile of configs/pipeline.yaml fits tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

WORKLOADS = ("tpcc", "social", "kv")

DEFAULTS = {
    "workload": "tpcc",
    "transactions": 200_000,
    "duration_s": 3600.0,
    "shards": 8,
    "capacities": None,             # a list (one per shard) for a heterogeneous cluster; default all 1.0
    # tpcc
    "warehouses": 32,
    "districts_per_warehouse": 10,
    "customers_per_district": 30,
    "catalogue_items": 500,         # rows of the item table, and stock rows per warehouse
    "initial_orders_per_district": 10,
    "remote_order_line": 0.01,
    "remote_payment": 0.15,
    "regions": 0,                   # > 0: warehouses fall in this many hidden regions (not by id) and
    "remote_in_region": 0.8,        # ... this share of remote work stays in the home warehouse's region
    "layout_seed": None,            # the deployment's regions, communities, hot keys; None: drawn with each trace
    # social
    "users": 6000,
    "communities": 30,
    "products": 2000,
    "initial_reviews": 12000,
    "trust_degree": 5.0,
    "cross_community": 0.1,
    # kv
    "keys": 50_000,
    "keys_per_txn": [2, 6],
    "zipf_exponent": 0.0,
    "read_share": 0.5,
}

TPCC_MIX = {"new_order": 0.45, "payment": 0.43, "order_status": 0.04, "delivery": 0.04, "stock_level": 0.04}
SOCIAL_MIX = {"read_feed": 0.35, "read_product": 0.25, "write_review": 0.15, "add_trust": 0.10, "update_profile": 0.15}


class _Trace:
    """Accesses collected as parallel arrays (transaction index, row index, write flag)."""

    def __init__(self):
        self.txn, self.row, self.write = [], [], []

    def add(self, txn, row, write: bool | np.ndarray) -> None:
        txn, row = np.asarray(txn, dtype=np.int64), np.asarray(row, dtype=np.int64)
        self.txn.append(txn)
        self.row.append(row)
        self.write.append(np.broadcast_to(np.asarray(write, dtype=bool), txn.shape).copy())

    def frame(self, item_ids: np.ndarray, ts: np.ndarray) -> pd.DataFrame:
        txn, row, write = (np.concatenate(parts) for parts in (self.txn, self.row, self.write))
        order = np.argsort(txn, kind="stable")
        txn, row, write = txn[order], row[order], write[order]
        used, inverse = np.unique(txn, return_inverse=True)
        names = np.array([f"t{i:07d}" for i in used], dtype=object)
        return pd.DataFrame({"txn_id": names[inverse], "item_id": item_ids[row],
                             "op": np.where(write, "w", "r").astype(object), "ts": ts[txn]})


def _layout_rng(cfg: dict, rng: np.random.Generator, stream: int) -> np.random.Generator:
    """What is the deployment's rather than the trace's (regions, communities, hot keys) draws from the layout
    seed, one stream per workload, so every round's trace has the same; without a layout seed, from the trace's."""
    return np.random.default_rng([int(cfg["layout_seed"]), stream]) if cfg.get("layout_seed") is not None else rng


def nurand(rng: np.random.Generator, n_values: int, size: int, spread: float) -> np.ndarray:
    """TPC-C's non-uniform random over [0, n): (rand(0, A) | rand(0, n-1)) + C mod n, with A scaled to n
    as the spec's A is to its n (``spread`` = A / n)."""
    a = max(1, 2 ** int(round(np.log2(max(n_values * spread, 1.0) + 1))) - 1)
    constant = int(rng.integers(0, n_values))
    return ((rng.integers(0, a + 1, size) | rng.integers(0, n_values, size)) + constant) % n_values


def latest_before(event_group: np.ndarray, event_ts: np.ndarray, query_group: np.ndarray, query_ts: np.ndarray,
                  most: int) -> tuple[np.ndarray, np.ndarray]:
    """(query index, event index) of up to ``most`` latest events of the query's group strictly before it."""
    order = np.lexsort((event_ts, event_group))
    group, ts = event_group[order].astype(np.float64), event_ts[order]
    span = float(max(ts.max(initial=0.0), query_ts.max(initial=0.0)) - min(ts.min(initial=0.0), 0.0)) + 1.0
    base = min(ts.min(initial=0.0), 0.0)
    combined = group * span + (ts - base)
    start = np.searchsorted(group, query_group.astype(np.float64), side="left")
    end = np.searchsorted(combined, query_group.astype(np.float64) * span + (query_ts - base), side="left")
    queries, events = [], []
    for back in range(1, most + 1):
        position = end - back
        ok = position >= start
        queries.append(np.flatnonzero(ok))
        events.append(order[position[ok]])
    return np.concatenate(queries), np.concatenate(events)


def _nullable(values: np.ndarray, present: np.ndarray):
    out = pd.array(np.asarray(values, dtype=np.int64), dtype="Int64")
    out[~present] = pd.NA
    return out


# --- TPC-C -------------------------------------------------------------------------------

def _tpcc(cfg: dict, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    W, D = int(cfg["warehouses"]), int(cfg["districts_per_warehouse"])
    C, I = int(cfg["customers_per_district"]), int(cfg["catalogue_items"])
    n, duration = int(cfg["transactions"]), float(cfg["duration_s"])
    initial = int(cfg["initial_orders_per_district"])
    kinds = list(TPCC_MIX)
    kind = rng.choice(len(kinds), size=n, p=np.array(list(TPCC_MIX.values())) / sum(TPCC_MIX.values()))
    ts = np.sort(rng.uniform(0.0, duration, n))
    home = rng.integers(0, W, n)
    district = rng.integers(0, D, n)
    customer = nurand(rng, C, n, 1023 / 3000)

    # Row offsets of each table in one catalogue of rows.
    off_district = W
    off_customer = off_district + W * D
    off_item = off_customer + W * D * C
    off_stock = off_item + I
    off_order = off_stock + W * I

    def district_row(w, d):
        return off_district + w * D + d

    def customer_row(w, d, c):
        return off_customer + (w * D + d) * C + c

    def stock_row(w, i):
        return off_stock + w * I + i

    def remote_warehouse(home_of: np.ndarray) -> np.ndarray:
        """Another warehouse than each home: uniform as the spec has it, or mostly of the home's region."""
        other = (home_of + rng.integers(1, W, len(home_of))) % W
        if regions > 0 and len(home_of):
            peers = [np.flatnonzero(region == r) for r in range(regions)]
            local = rng.random(len(home_of)) < float(cfg["remote_in_region"])
            for r, members in enumerate(peers):
                pick = np.flatnonzero(local & (region[home_of] == r))
                if len(members) > 1 and len(pick):  # uniform over the region's other warehouses
                    drawn = rng.integers(0, len(members) - 1, len(pick))
                    drawn += drawn >= np.searchsorted(members, home_of[pick])
                    other[pick] = members[drawn]
        return other

    regions = int(cfg["regions"])
    # Regions group warehouses by where they are, not by their number (ids follow opening order). They are
    # the deployment's geography: with a layout seed every round's trace has the same regions.
    layout = _layout_rng(cfg, rng, stream=2)
    region = layout.permutation(np.arange(W) % regions) if regions > 0 else np.zeros(W, dtype=np.int64)

    # Orders: the initial ones (entered before the trace), then one per NewOrder.
    new_order = np.flatnonzero(kind == kinds.index("new_order"))
    lines = rng.integers(5, 16, len(new_order))
    init_district = np.repeat(np.arange(W * D), initial)
    order_district = np.concatenate([init_district, home[new_order] * D + district[new_order]])
    order_customer = np.concatenate([rng.integers(0, C, len(init_district)), customer[new_order]])
    order_created = np.concatenate([np.full(len(init_district), -1.0), ts[new_order]])
    order_lines = np.concatenate([rng.integers(5, 16, len(init_district)), lines])
    # Order numbers count up within a district in time order, as TPC-C's o_id does.
    order_number = pd.Series(order_created).groupby(order_district).rank(method="first").to_numpy().astype(np.int64) - 1
    order_row = off_order + np.arange(len(order_district))
    new_order_row = order_row[len(init_district):]

    trace = _Trace()
    # NewOrder: read warehouse and customer, bump the district's next order id, insert the order,
    # and per line read the item and update the stock of the supplying warehouse.
    w, d, c = home[new_order], district[new_order], customer[new_order]
    trace.add(new_order, w, False)
    trace.add(new_order, district_row(w, d), True)
    trace.add(new_order, customer_row(w, d, c), False)
    trace.add(new_order, new_order_row, True)
    line_txn = np.repeat(new_order, lines)
    line_item = nurand(rng, I, len(line_txn), 8191 / 100000)
    supply = home[line_txn].copy()
    remote = rng.random(len(line_txn)) < float(cfg["remote_order_line"])
    if W > 1:
        supply[remote] = remote_warehouse(supply[remote])
    trace.add(line_txn, off_item + line_item, False)
    trace.add(line_txn, stock_row(supply, line_item), True)

    # Payment: update warehouse and district year-to-date, and the paying customer, 15% of a remote warehouse.
    payment = np.flatnonzero(kind == kinds.index("payment"))
    w, d = home[payment], district[payment]
    cw, cd, cc = w.copy(), d.copy(), customer[payment]
    remote = rng.random(len(payment)) < float(cfg["remote_payment"])
    if W > 1:
        cw[remote] = remote_warehouse(cw[remote])
        cd[remote] = rng.integers(0, D, int(remote.sum()))
    trace.add(payment, w, True)
    trace.add(payment, district_row(w, d), True)
    trace.add(payment, customer_row(cw, cd, cc), True)

    # OrderStatus: read a customer and their latest order.
    status = np.flatnonzero(kind == kinds.index("order_status"))
    w, d, c = home[status], district[status], customer[status]
    trace.add(status, customer_row(w, d, c), False)
    q, e = latest_before(order_district * C + order_customer, order_created, (w * D + d) * C + c, ts[status], 1)
    trace.add(status[q], order_row[e], False)

    # Delivery: for every district of the warehouse, deliver its oldest undelivered order (update the
    # order and its customer's balance); the k-th delivery of a warehouse delivers each district's k-th order.
    delivery = np.flatnonzero(kind == kinds.index("delivery"))
    nth = pd.Series(ts[delivery]).groupby(home[delivery]).rank(method="first").to_numpy().astype(np.int64) - 1
    by_district = np.lexsort((order_created, order_district))
    first_of = np.searchsorted(order_district[by_district], np.arange(W * D), side="left")
    count_of = np.bincount(order_district, minlength=W * D)
    dl_txn = np.repeat(delivery, D)
    dl_district = home[dl_txn] * D + np.tile(np.arange(D), len(delivery))
    dl_nth = np.repeat(nth, D)
    exists = dl_nth < count_of[dl_district]
    target = by_district[np.minimum(first_of[dl_district] + dl_nth, len(by_district) - 1)]
    exists &= order_created[target] < ts[dl_txn]
    dl_txn, target = dl_txn[exists], target[exists]
    trace.add(dl_txn, order_row[target], True)
    trace.add(dl_txn, customer_row(order_district[target] // D, order_district[target] % D, order_customer[target]), True)
    trace.add(delivery, home[delivery], False)  # the carrier reads its warehouse

    # StockLevel: read the district, its latest orders and the stock of recently ordered items.
    level = np.flatnonzero(kind == kinds.index("stock_level"))
    w, d = home[level], district[level]
    trace.add(level, district_row(w, d), False)
    q, e = latest_before(order_district, order_created, w * D + d, ts[level], 5)
    trace.add(level[q], order_row[e], False)
    stock_txn = np.repeat(level, 10)
    trace.add(stock_txn, stock_row(home[stock_txn], nurand(rng, I, len(stock_txn), 8191 / 100000)), False)

    # The rows.
    wid = np.arange(W)
    dw, dd = np.divmod(np.arange(W * D), D)
    cw_, rest = np.divmod(np.arange(W * D * C), D * C)
    cd_, cc_ = np.divmod(rest, C)
    sw, si = np.divmod(np.arange(W * I), I)
    ow, od = np.divmod(order_district, D)
    ids = np.concatenate([
        [f"warehouse/{x:04d}" for x in wid],
        [f"district/{a:04d}/{b:02d}" for a, b in zip(dw, dd)],
        [f"customer/{a:04d}/{b:02d}/{x:05d}" for a, b, x in zip(cw_, cd_, cc_)],
        [f"item/{x:06d}" for x in range(I)],
        [f"stock/{a:04d}/{x:06d}" for a, x in zip(sw, si)],
        [f"order/{a:04d}/{b:02d}/{x:07d}" for a, b, x in zip(ow, od, order_number)],
    ]).astype(object)
    tables = np.concatenate([np.full(W, "warehouse"), np.full(W * D, "district"), np.full(W * D * C, "customer"),
                             np.full(I, "item"), np.full(W * I, "stock"), np.full(len(order_district), "order")]).astype(object)
    size = np.concatenate([rng.normal(90, 5, W), rng.normal(95, 5, W * D), rng.normal(655, 40, W * D * C),
                           rng.normal(82, 6, I), rng.normal(306, 10, W * I),
                           24 + 54 * order_lines + rng.normal(0, 4, len(order_lines))])
    warehouse = np.concatenate([wid, dw, cw_, np.zeros(I, dtype=np.int64), sw, ow])
    has_warehouse = tables != "item"
    district_attr = np.concatenate([np.zeros(W, dtype=np.int64), dd, cd_, np.zeros(I + W * I, dtype=np.int64), od])
    has_district = np.isin(tables, ["district", "customer", "order"])
    items = pd.DataFrame({"item_id": ids, "table": tables, "size_bytes": np.maximum(np.rint(size), 1).astype(np.int64),
                          "attr_warehouse": _nullable(warehouse, has_warehouse),
                          "attr_district": _nullable(district_attr, has_district)})
    return items, trace.frame(ids, ts)


# --- social (Epinions-like) ------------------------------------------------------------------

def _power_law(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    weights = (np.arange(n) + 1.0) ** -exponent
    return rng.permutation(weights / weights.sum())


def _social(cfg: dict, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    U, K, P = int(cfg["users"]), int(cfg["communities"]), int(cfg["products"])
    n, duration = int(cfg["transactions"]), float(cfg["duration_s"])
    cross = float(cfg["cross_community"])
    # The communities, who is active, what is popular and the database before the trace (trust edges,
    # reviews) are the deployment's: with a layout seed every round's trace runs on the same ones.
    layout = _layout_rng(cfg, rng, stream=3)
    community_share = _power_law(layout, K, 0.8)
    community = layout.choice(K, size=U, p=community_share)
    activity = _power_law(layout, U, 0.7)
    members = [np.flatnonzero(community == k) for k in range(K)]
    member_weight = [activity[m] / activity[m].sum() if len(m) else m for m in members]
    product_community = layout.choice(K, size=P, p=community_share)
    popularity = _power_law(layout, P, 0.9)
    products_of = [np.flatnonzero(product_community == k) for k in range(K)]
    product_weight = [popularity[p] / popularity[p].sum() if len(p) else p for p in products_of]

    def pick_user_near(user: np.ndarray, draw: np.random.Generator = rng) -> np.ndarray:
        """A user of the same community, by activity; ``cross`` of the time anyone."""
        out = draw.choice(U, size=len(user), p=activity)
        local = draw.random(len(user)) >= cross
        for k in range(K):
            sel = np.flatnonzero(local & (community[user] == k))
            if len(sel) and len(members[k]):
                out[sel] = draw.choice(members[k], size=len(sel), p=member_weight[k])
        return out

    def pick_product_for(user: np.ndarray, draw: np.random.Generator = rng) -> np.ndarray:
        out = draw.choice(P, size=len(user), p=popularity)
        local = draw.random(len(user)) < 0.8
        for k in range(K):
            sel = np.flatnonzero(local & (community[user] == k))
            if len(sel) and len(products_of[k]):
                out[sel] = draw.choice(products_of[k], size=len(sel), p=product_weight[k])
        return out

    raw = np.minimum(layout.zipf(2.2, U), 50).astype(np.float64)  # power-law out-degrees, mean trust_degree
    degree = np.maximum(np.rint(raw * float(cfg["trust_degree"]) / raw.mean()), 1).astype(np.int64)
    trust_from0 = np.repeat(np.arange(U), degree)
    trust_to0 = pick_user_near(trust_from0, layout)
    review_author0 = layout.choice(U, size=int(cfg["initial_reviews"]), p=activity)
    review_product0 = pick_product_for(review_author0, layout)

    kinds = list(SOCIAL_MIX)
    kind = rng.choice(len(kinds), size=n, p=np.array(list(SOCIAL_MIX.values())) / sum(SOCIAL_MIX.values()))
    ts = np.sort(rng.uniform(0.0, duration, n))
    actor = rng.choice(U, size=n, p=activity)

    writes = np.flatnonzero(kind == kinds.index("write_review"))
    new_product = pick_product_for(actor[writes])
    adds = np.flatnonzero(kind == kinds.index("add_trust"))
    new_trusted = pick_user_near(actor[adds])

    review_author = np.concatenate([review_author0, actor[writes]])
    review_product = np.concatenate([review_product0, new_product])
    review_created = np.concatenate([np.full(len(review_author0), -1.0), ts[writes]])
    trust_from = np.concatenate([trust_from0, actor[adds]])
    trust_to = np.concatenate([trust_to0, new_trusted])
    trust_created = np.concatenate([np.full(len(trust_from0), -1.0), ts[adds]])

    off_product = U
    off_review = off_product + P
    off_trust = off_review + len(review_author)
    review_row = off_review + np.arange(len(review_author))
    trust_row = off_trust + np.arange(len(trust_from))

    trace = _Trace()
    # Feed: the user, up to 4 of their trust edges, the trusted users and each one's latest review.
    feed = np.flatnonzero(kind == kinds.index("read_feed"))
    trace.add(feed, actor[feed], False)
    q, e = latest_before(trust_from, trust_created, actor[feed], ts[feed], 4)
    trace.add(feed[q], trust_row[e], False)
    trusted = trust_to[e]
    trace.add(feed[q], trusted, False)
    q2, e2 = latest_before(review_author, review_created, trusted, ts[feed[q]], 1)
    trace.add(feed[q][q2], review_row[e2], False)
    # Product page: the product and its 3 latest reviews.
    page = np.flatnonzero(kind == kinds.index("read_product"))
    page_product = rng.choice(P, size=len(page), p=popularity)
    local = rng.random(len(page)) < 0.8  # people mostly browse what their community buys
    page_product[local] = pick_product_for(actor[page][local])
    trace.add(page, off_product + page_product, False)
    q, e = latest_before(review_product, review_created, page_product, ts[page], 3)
    trace.add(page[q], review_row[e], False)
    # Write a review: insert it, update the product's rating, read the author.
    trace.add(writes, review_row[len(review_author0):], True)
    trace.add(writes, off_product + new_product, True)
    trace.add(writes, actor[writes], False)
    # Trust someone: insert the edge, update the user, read the trusted user.
    trace.add(adds, trust_row[len(trust_from0):], True)
    trace.add(adds, actor[adds], True)
    trace.add(adds, new_trusted, False)
    # Profile update: one row.
    profile = np.flatnonzero(kind == kinds.index("update_profile"))
    trace.add(profile, actor[profile], True)

    ids = np.concatenate([
        [f"user/{x:06d}" for x in range(U)],
        [f"product/{x:05d}" for x in range(P)],
        [f"review/{x:07d}" for x in range(len(review_author))],
        [f"trust/{x:07d}" for x in range(len(trust_from))],
    ]).astype(object)
    tables = np.concatenate([np.full(U, "user"), np.full(P, "product"), np.full(len(review_author), "review"),
                             np.full(len(trust_from), "trust")]).astype(object)
    size = np.concatenate([rng.normal(400, 60, U), rng.normal(300, 40, P), rng.normal(900, 300, len(review_author)),
                           rng.normal(40, 2, len(trust_from))])
    user_attr = np.concatenate([np.arange(U), np.zeros(P, dtype=np.int64), review_author, trust_from])
    product_attr = np.concatenate([np.zeros(U, dtype=np.int64), np.arange(P), review_product,
                                   np.zeros(len(trust_from), dtype=np.int64)])
    items = pd.DataFrame({"item_id": ids, "table": tables, "size_bytes": np.maximum(np.rint(size), 1).astype(np.int64),
                          "attr_user": _nullable(user_attr, tables != "product"),
                          "attr_product": _nullable(product_attr, np.isin(tables, ["product", "review"]))})
    return items, trace.frame(ids, ts)


# --- key-value (YCSB-like) -------------------------------------------------------------------

def _kv(cfg: dict, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    K, n = int(cfg["keys"]), int(cfg["transactions"])
    low, high = (int(x) for x in cfg["keys_per_txn"])
    exponent = float(cfg["zipf_exponent"])
    weights = None
    if exponent > 0:  # which keys are hot is the deployment's: the same in every round with a layout seed
        layout = _layout_rng(cfg, rng, stream=4)
        weights = _power_law(layout, K, exponent)
    per_txn = rng.integers(low, high + 1, n)
    txn = np.repeat(np.arange(n), per_txn)
    key = rng.choice(K, size=len(txn), p=weights)
    write = rng.random(len(txn)) >= float(cfg["read_share"])
    ts = np.sort(rng.uniform(0.0, float(cfg["duration_s"]), n))
    trace = _Trace()
    trace.add(txn, key, write)
    ids = np.array([f"key/{x:07d}" for x in range(K)], dtype=object)
    items = pd.DataFrame({"item_id": ids, "table": np.full(K, "usertable", dtype=object),
                          "size_bytes": np.maximum(np.rint(rng.normal(1000, 100, K)), 1).astype(np.int64)})
    return items, trace.frame(ids, ts)


def generate_shards(cfg: dict) -> pd.DataFrame:
    count = int(cfg["shards"])
    capacities = cfg.get("capacities")
    capacity = np.ones(count) if capacities is None else np.asarray(capacities, dtype=np.float64)
    if len(capacity) != count:
        raise ValueError(f"sharder source: {len(capacity)} capacities for {count} shards")
    return pd.DataFrame({"shard_id": np.arange(count, dtype=np.int32), "capacity": capacity})


def generate(cfg: dict, seed: int) -> dict[str, pd.DataFrame]:
    cfg = {**DEFAULTS, **(cfg or {})}
    workload = cfg["workload"]
    if workload not in WORKLOADS:
        raise ValueError(f"sharder source: unknown workload {workload!r} (known: {', '.join(WORKLOADS)})")
    rng = np.random.default_rng(seed)
    items, accesses = {"tpcc": _tpcc, "social": _social, "kv": _kv}[workload](cfg, rng)
    shards = generate_shards(cfg)
    from ._peers import hash_placement

    # The deployment of today hashes every row; the learned sharder is judged by how much it moves.
    items["current_shard"] = pd.array(hash_placement(items["item_id"].to_numpy(dtype=object), shards), dtype="Int32")
    columns = ["item_id", "table", "size_bytes", "current_shard"] + [c for c in items.columns if c.startswith("attr_")]
    return {"shards": shards, "items": items[columns], "accesses": accesses}
