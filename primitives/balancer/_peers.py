"""Classical peers of the learned balancer: the routers it is measured against.

Every peer decides once per routing unit (a key, an affinity group, or one
replica of an anti-affinity group; see ``Units``) and broadcasts the decision
to the unit's requests, so affinity holds by construction for all of them. A
unit may only land on a server of its ``requires_class`` (``Fleet.eligible``):
each peer runs on the eligible subset of the fleet, so class violations are
zero for all of them. They differ in load and in how they treat anti-affinity:

- ``rendezvous``: highest-random-weight hashing, i.e. ``route_units`` with
  equal logits. Anti-affinity replicas are placed jointly on distinct servers
  (and distinct zones while the eligible fleet has enough), by ``route_units``.
- ``weighted_rendezvous``: the same with logits log w(s), where the scalar
  capacity weight w(s) = mean over resources d of cap(s,d) / sum_s cap(s,d),
  so a server receives units in proportion to its capacity. Replicas as above.
- ``jump_hash``: Lamping & Veach's jump consistent hash over the eligible
  servers in the fleet's order. It has no notion of groups: each replica of an
  anti-affinity group is routed as an independent key (its group's hash mixed
  with its replica number), so replicas may collide, and that shows
  in ``anti_affinity_violation_rate``. Jump hash only supports removing the
  *last* bucket cheaply, so removing a server from the middle moves many units.
- ``maglev``: Google's Maglev lookup table (65537 slots) filled round-robin
  from each server's (offset, skip) permutation; one table per distinct
  eligible-server subset, looked up at hash % M. Replicas as independent keys.
- ``bounded_load_ch``: consistent hashing with bounded loads (Mirrokni,
  Thorup & Zadimoghaddam): a ring of 100 virtual nodes per server; units, in
  order of first appearance in the batch, walk clockwise from their hash to the
  first eligible server whose load (in requests) stays within its bound.
  Replicas as independent keys.

  The bound of a server is ``ceil((1 + eps) * fair(s))``. Units may be
  restricted to a class, so the fair share is summed over the eligibility
  pools the server belongs to: for each distinct ``requires_class`` value P
  (``None`` = the whole fleet) with R_P requests, a server eligible for P gets
  ``R_P * w(s) / sum_{s' eligible for P} w(s')``. With no restrictions this is
  the textbook ``(1 + eps) * total * w(s)`` (with w = 1/n on a uniform fleet).
  Units are indivisible and weighted by their request count, so a unit may
  fit nowhere (a hot key larger than any bound, or a pool the greedy order has
  filled); it then goes to the eligible server with the lowest load relative
  to its bound after adding it, rather than failing.

- ``lp_weighted_rendezvous``: rendezvous hashing whose weight for a request
  group (request class and required class) on a server is the group's share
  on that server in the optimal fractional split of the training part's
  demand: the lower bound's LP (``_lp.solve_split``). The strongest
  classical router here; replicas as in ``rendezvous``.

``PEERS`` maps each name to its class; ``build_peer`` makes one, fitted on
the training part where the peer learns from it.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd

from ._fleet import Fleet, Units
from ._hashing import hash_strings, splitmix64
from ._routing import factorize_requirements, route_requests, route_units

_JUMP_MULTIPLIER = np.uint64(2862933555777941757)
_SKIP_SALT = np.uint64(0x5BD1E9955BD1E995)  # decorrelates maglev's skip hash from its offset hash


def capacity_weights(capacity: np.ndarray) -> np.ndarray:
    """Scalar capacity weight per server: mean over resources of its share of that resource (sums to 1)."""
    capacity = np.asarray(capacity, dtype=np.float64)
    return (capacity / capacity.sum(axis=0, keepdims=True)).mean(axis=1)


def key_hashes(units: Units) -> np.ndarray:
    """One hash per unit for routers that know nothing of groups.

    ``Units.unit_hash`` of an anti-affinity replica is its *group's* hash (so
    that ``route_units`` can rank servers once per group); routed as
    independent keys, each replica needs its own hash instead.
    """
    h = units.unit_hash.copy()
    anti = units.anti_group >= 0
    if anti.any():
        h[anti] = splitmix64(h[anti] ^ (units.replica[anti].astype(np.uint64) + np.uint64(1)))
    return h


def eligibility_pools(units: Units, fleet: Fleet) -> tuple[np.ndarray, list[np.ndarray]]:
    """(pool code per unit, eligible server indexes per pool), one pool per distinct requires_class."""
    codes, requirements = factorize_requirements(units.requires_class)
    return np.asarray(codes, dtype=np.int64), [np.flatnonzero(fleet.eligible(r)) for r in requirements]


class _UnitRouter:
    """Shared ``route``: build units and fleet, decide per unit, broadcast to requests."""

    name: str = ""

    def route(self, requests: pd.DataFrame, servers: pd.DataFrame) -> np.ndarray:
        units = Units.from_frame(requests)
        fleet = Fleet.from_frame(servers)
        return route_requests(units, fleet, self.route_units(units, fleet))

    def route_units(self, units: Units, fleet: Fleet) -> np.ndarray:  # server index per unit
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RendezvousRouter(_UnitRouter):
    name = "rendezvous"

    def route_units(self, units: Units, fleet: Fleet) -> np.ndarray:
        return route_units(units, fleet, np.zeros(len(units), dtype=np.int64), np.zeros((1, len(fleet)), dtype=np.float32))


class WeightedRendezvousRouter(_UnitRouter):
    name = "weighted_rendezvous"

    def route_units(self, units: Units, fleet: Fleet) -> np.ndarray:
        logits = np.log(capacity_weights(fleet.capacity))[None, :]
        return route_units(units, fleet, np.zeros(len(units), dtype=np.int64), logits)


class LPWeightedRendezvousRouter(_UnitRouter):
    """Rendezvous hashing weighted per (request group, server) by the LP's optimal fractional split of the group.

    A request group is a (request class, required class) pair. Fitted on
    the training part: each group's demand over it, split over the fleet by
    the lower bound's LP (``_lp.solve_split``), gives the group's weight on
    every server; a unit of the group then lands on server s with that
    probability, by the same hashed draw as every rendezvous router, so
    removing a server moves only its units. Weights belong to server types
    (class and capacity shape), not names (``_lp.SplitWeights``); a group
    the training part lacked routes by capacity, as ``weighted_rendezvous``
    does. Without a training part,
    it fits on the first batch it routes, which makes it an oracle of that
    batch's split: a harder peer, never an easier one.
    """

    name = "lp_weighted_rendezvous"

    def __init__(self, training: dict | None = None):
        self.training = training
        self._split = None

    def route_units(self, units: Units, fleet: Fleet) -> np.ndarray:
        from ._lp import SplitWeights

        if self._split is None:
            if self.training is None:
                self._split = SplitWeights.fit(units, fleet)
            else:
                self._split = SplitWeights.fit(Units.from_frame(self.training["requests"]),
                                               Fleet.from_frame(self.training["servers"]))
        # The last profile routes groups the training part lacked by capacity, as weighted_rendezvous does.
        profile = self._split.group_index(units)
        logits = np.vstack([self._split.logits(fleet), np.log(capacity_weights(fleet.capacity))[None, :]])
        return route_units(units, fleet, np.where(profile < 0, len(logits) - 1, profile), logits)


def jump_hash(keys: np.ndarray, n_buckets: int) -> np.ndarray:
    """Jump consistent hash of every uint64 key into [0, n_buckets), vectorised over keys.

    The scalar loop runs O(log n) rounds per key; here each round advances all
    keys still below n_buckets at once, bit-for-bit as the reference (the
    64-bit LCG wraps mod 2**64, the jump is computed in double precision).
    """
    key = np.array(keys, dtype=np.uint64, copy=True)
    b = np.full(len(key), -1, dtype=np.int64)
    j = np.zeros(len(key), dtype=np.int64)
    active = np.arange(len(key))
    with np.errstate(over="ignore"):
        while active.size:
            b[active] = j[active]
            k = key[active] * _JUMP_MULTIPLIER + np.uint64(1)
            key[active] = k
            jumped = (b[active] + 1).astype(np.float64) * (float(1 << 31) / ((k >> np.uint64(33)).astype(np.float64) + 1.0))
            # A huge jump means "done"; clip before the cast so it cannot overflow int64.
            j[active] = np.minimum(jumped, float(n_buckets)).astype(np.int64)
            active = active[j[active] < n_buckets]
    return b


class JumpHashRouter(_UnitRouter):
    name = "jump_hash"

    def route_units(self, units: Units, fleet: Fleet) -> np.ndarray:
        choice = np.empty(len(units), dtype=np.int64)
        keys = key_hashes(units)
        codes, pools = eligibility_pools(units, fleet)
        for p, eligible in enumerate(pools):
            idx = np.flatnonzero(codes == p)
            choice[idx] = eligible[jump_hash(keys[idx], len(eligible))]
        return choice


def maglev_table(server_hash: np.ndarray, size: int = 65537) -> np.ndarray:
    """Maglev lookup table: slot -> position in ``server_hash`` (size should be a prime > #servers).

    Population is inherently sequential (each server in turn claims the next
    free slot of its permutation), about size * ln(size) probes in total, so it
    runs as a plain Python loop over slots; routers cache the result per fleet.
    """
    n = len(server_hash)
    if n == 0:
        raise ValueError("maglev_table: no servers")
    offset = (server_hash % np.uint64(size)).astype(np.int64).tolist()
    skip = (splitmix64(server_hash ^ _SKIP_SALT) % np.uint64(size - 1) + np.uint64(1)).astype(np.int64).tolist()
    entry = [-1] * size
    next_index = [0] * n
    filled = 0
    while True:
        for i in range(n):
            off, sk, j = offset[i], skip[i], next_index[i]
            c = (off + j * sk) % size
            while entry[c] >= 0:
                j += 1
                c = (off + j * sk) % size
            entry[c] = i
            next_index[i] = j + 1
            filled += 1
            if filled == size:
                return np.asarray(entry, dtype=np.int64)


class _FleetCache:
    """Small LRU keyed by server ids: tables and rings depend only on the fleet, not the batch."""

    def __init__(self, capacity: int = 32):
        self._items: OrderedDict = OrderedDict()
        self._capacity = capacity

    def get(self, key, build):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = build()
        self._items[key] = value
        if len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return value


class MaglevRouter(_UnitRouter):
    name = "maglev"

    def __init__(self, table_size: int = 65537):
        self.table_size = table_size
        self._tables = _FleetCache()

    def route_units(self, units: Units, fleet: Fleet) -> np.ndarray:
        choice = np.empty(len(units), dtype=np.int64)
        slot = (key_hashes(units) % np.uint64(self.table_size)).astype(np.int64)
        codes, pools = eligibility_pools(units, fleet)
        for p, eligible in enumerate(pools):
            # Cached in positions within the subset: the subset's positions in
            # the fleet change when other servers come or go.
            cache_key = (self.table_size, tuple(fleet.server_id[eligible]))
            table = self._tables.get(cache_key, lambda: maglev_table(fleet.server_hash[eligible], self.table_size))
            idx = np.flatnonzero(codes == p)
            choice[idx] = eligible[table[slot[idx]]]
        return choice


class BoundedLoadRouter(_UnitRouter):
    name = "bounded_load_ch"

    def __init__(self, epsilon: float = 0.25, vnodes: int = 100):
        self.epsilon = epsilon
        self.vnodes = vnodes
        self._rings = _FleetCache()

    def _ring(self, fleet: Fleet) -> tuple[np.ndarray, np.ndarray]:
        """(sorted ring points, server index of each point) for the whole fleet."""

        def build():
            ids = np.repeat(fleet.server_id.astype(str), self.vnodes)
            labels = pd.Index(ids, dtype=object) + "#" + pd.Index(np.tile(np.arange(self.vnodes), len(fleet)).astype(str), dtype=object)
            points = hash_strings(labels)
            order = np.argsort(points, kind="stable")
            return points[order], np.repeat(np.arange(len(fleet)), self.vnodes)[order]

        return self._rings.get((self.vnodes, tuple(fleet.server_id)), build)

    def bounds(self, units: Units, fleet: Fleet) -> np.ndarray:
        """Per-server load bound in requests (see the module docstring)."""
        weight = capacity_weights(fleet.capacity)
        codes, pools = eligibility_pools(units, fleet)
        requests_per_pool = np.bincount(codes, weights=units.n_requests, minlength=len(pools))
        fair = np.zeros(len(fleet))
        for eligible, r in zip(pools, requests_per_pool):
            fair[eligible] += r * weight[eligible] / weight[eligible].sum()
        return np.ceil((1.0 + self.epsilon) * fair).astype(np.int64)

    def route_units(self, units: Units, fleet: Fleet) -> np.ndarray:
        points, ring_server = self._ring(fleet)
        keys = key_hashes(units)
        codes, pools = eligibility_pools(units, fleet)
        bound = self.bounds(units, fleet).tolist()

        # Each pool walks its own ring (the fleet's ring without ineligible
        # points), so the sequential loop below never probes a server it
        # could not use; the unit's starting point is found vectorised.
        start = np.empty(len(units), dtype=np.int64)
        pool_rings, pool_servers = [], []
        for p, eligible in enumerate(pools):
            keep = np.isin(ring_server, eligible)
            pool_points = points[keep]
            idx = np.flatnonzero(codes == p)
            start[idx] = np.searchsorted(pool_points, keys[idx], side="left") % len(pool_points)
            pool_rings.append(ring_server[keep].tolist())
            pool_servers.append(eligible.tolist())

        load = [0] * len(fleet)
        choice = [0] * len(units)
        n_requests = units.n_requests.tolist()
        start_l = start.tolist()
        code_l = codes.tolist()
        # Bounded loads is sequential by definition: a unit's server depends
        # on the loads left by every unit before it.
        for u in pd.unique(units.request_unit).tolist():
            n = n_requests[u]
            ring = pool_rings[code_l[u]]
            length = len(ring)
            i = start_l[u]
            for _ in range(length):
                s = ring[i]
                if load[s] + n <= bound[s]:
                    break
                i += 1
                if i == length:
                    i = 0
            else:
                s = min(pool_servers[code_l[u]], key=lambda t: (load[t] + n) / max(bound[t], 1))
            load[s] += n
            choice[u] = s
        return np.asarray(choice, dtype=np.int64)


def build_peer(name: str, training: dict | None = None) -> _UnitRouter:
    """The peer called ``name``; a peer that learns (``PEERS_THAT_LEARN``) fits on the ``training`` tables."""
    return PEERS[name](training) if name in PEERS_THAT_LEARN else PEERS[name]()


PEERS_THAT_LEARN = frozenset({LPWeightedRendezvousRouter.name})

PEERS = {
    RendezvousRouter.name: RendezvousRouter,
    WeightedRendezvousRouter.name: WeightedRendezvousRouter,
    LPWeightedRendezvousRouter.name: LPWeightedRendezvousRouter,
    JumpHashRouter.name: JumpHashRouter,
    MaglevRouter.name: MaglevRouter,
    BoundedLoadRouter.name: BoundedLoadRouter,
}
