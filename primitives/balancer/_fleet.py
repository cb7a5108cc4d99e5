"""Columnar views of a fleet and of a batch of requests, shared by every router.

A *routing unit* is what one routing decision places: a key, an affinity group
(all its requests together), or one replica of an anti-affinity group. Routers
decide per unit and broadcast to requests, which is what makes affinity hold by
construction and keeps the work proportional to distinct units, not requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._schema import require_columns
from ._hashing import hash_strings, splitmix64

RESOURCES = ("cpu", "mem", "io")
CAPACITY_COLUMNS = tuple(f"cap_{r}" for r in RESOURCES)
COST_COLUMNS = tuple(f"cost_{r}" for r in RESOURCES)


class RoutingError(ValueError):
    """A batch that no router can serve (e.g. a class no server has)."""


@dataclass(frozen=True)
class Fleet:
    server_id: np.ndarray  # object (S,)
    server_class: np.ndarray  # object (S,)
    zone: np.ndarray  # object (S,)
    capacity: np.ndarray  # float64 (S, 3)
    server_hash: np.ndarray  # uint64 (S,)

    @classmethod
    def from_frame(cls, servers: pd.DataFrame) -> "Fleet":
        if len(servers) == 0:
            raise RoutingError("servers: the fleet is empty")
        require_columns(servers, "servers", ("server_id", "server_class", "zone", *CAPACITY_COLUMNS), RoutingError)
        ids = servers["server_id"].astype(object).to_numpy()
        return cls(
            server_id=ids,
            server_class=servers["server_class"].astype(object).to_numpy(),
            zone=servers["zone"].astype(object).to_numpy(),
            capacity=servers[list(CAPACITY_COLUMNS)].to_numpy(dtype=np.float64),
            server_hash=hash_strings(ids),
        )

    def __len__(self) -> int:
        return len(self.server_id)

    def eligible(self, requires_class) -> np.ndarray:
        """Boolean mask of servers that may serve a unit with this requirement."""
        if requires_class is None:
            return np.ones(len(self), dtype=bool)
        mask = self.server_class == requires_class
        if not mask.any():
            raise RoutingError(f"requests: requires_class {requires_class!r} matches no server in the fleet")
        return mask

    def zone_codes(self) -> tuple[np.ndarray, int]:
        codes, uniques = pd.factorize(self.zone)
        return codes.astype(np.int64), len(uniques)


# A salt per kind of unit, so a key and a group of the same name hash apart.
_KIND_SALT = {"k": np.uint64(0x6B6579), "a": np.uint64(0x616666), "x": np.uint64(0x616E7469)}


@dataclass(frozen=True)
class Units:
    request_unit: np.ndarray  # int64 (R,): index of each request's unit
    unit_kind: np.ndarray  # <U1 (U,): "k" key, "a" affinity group, "x" anti-affinity replica (readable name: kind:value[#replica])
    unit_value: np.ndarray  # object (U,): the key or group name
    unit_hash: np.ndarray  # uint64 (U,): hash of the unit (of the group, for anti-affinity replicas)
    anti_group: np.ndarray  # int64 (U,): anti-affinity group index, -1 otherwise
    replica: np.ndarray  # int64 (U,): replica number, -1 otherwise
    requires_class: np.ndarray  # object (U,): required server class or None
    demand: np.ndarray  # float64 (U, 3)
    n_requests: np.ndarray  # int64 (U,)
    request_class: np.ndarray  # object (U,): the unit's profile (most frequent class)

    @classmethod
    def from_frame(cls, requests: pd.DataFrame) -> "Units":
        if len(requests) == 0:
            raise RoutingError("requests: the batch is empty")
        # Routing reads keys and classes only; a request's cost is known after it ran, so a batch to route
        # may come without one (its units then carry no demand, which only evaluation and training read).
        require_columns(requests, "requests", ("key", "request_class"), RoutingError)
        has_costs = any(c in requests for c in COST_COLUMNS)
        if has_costs:
            require_columns(requests, "requests", COST_COLUMNS, RoutingError)
        n = len(requests)
        key = requests["key"].to_numpy(dtype=object)
        aff = optional_column(requests, "affinity_group")
        anti = optional_column(requests, "anti_affinity_group")
        has_anti = pd.notna(anti)
        has_aff = pd.notna(aff) & ~has_anti
        plain = ~(has_anti | has_aff)
        replica = np.full(n, -1, dtype=np.int64)
        if "replica" in requests and has_anti.any():
            replica = pd.array(requests["replica"], dtype="Int64").fillna(-1).to_numpy(dtype=np.int64)

        # Factorise each kind of unit separately, then stack them. Only the
        # distinct values are hashed, and no per-request string is built.
        request_unit = np.empty(n, dtype=np.int64)
        kinds, values, hashes, groups, replicas = [], [], [], [], []
        offset = 0
        for kind, rows, column in (("k", plain, key), ("a", has_aff, aff)):
            codes, uniques = pd.factorize(column[rows])
            request_unit[rows] = codes + offset
            offset += len(uniques)
            uniques = np.asarray(uniques, dtype=object)
            kinds.append(np.full(len(uniques), kind))
            values.append(uniques)
            hashes.append(_kind_hash(kind, uniques))
            groups.append(np.full(len(uniques), -1, dtype=np.int64))
            replicas.append(np.full(len(uniques), -1, dtype=np.int64))
        width = int(replica[has_anti].max(initial=0)) + 1
        group_codes, group_uniques = pd.factorize(anti[has_anti])
        pair_codes, pair_uniques = pd.factorize(group_codes.astype(np.int64) * width + replica[has_anti])
        request_unit[has_anti] = pair_codes + offset
        pair_group, pair_replica = np.divmod(np.asarray(pair_uniques, dtype=np.int64), width)
        group_uniques = np.asarray(group_uniques, dtype=object)
        kinds.append(np.full(len(pair_group), "x"))
        values.append(group_uniques[pair_group])
        hashes.append(_kind_hash("x", group_uniques)[pair_group])  # replicas share their group's hash
        groups.append(pair_group)
        replicas.append(pair_replica)

        n_units = offset + len(pair_uniques)
        costs = requests[list(COST_COLUMNS)].to_numpy(dtype=np.float64) if has_costs else np.zeros((n, len(COST_COLUMNS)))
        demand = np.stack([np.bincount(request_unit, weights=costs[:, d], minlength=n_units) for d in range(costs.shape[1])], axis=1)
        requires = optional_column(requests, "requires_class")
        first = first_rows(request_unit, n_units)
        return cls(
            request_unit=request_unit,
            unit_kind=np.concatenate(kinds),
            unit_value=np.concatenate(values),
            unit_hash=np.concatenate(hashes),
            anti_group=np.concatenate(groups),
            replica=np.concatenate(replicas),
            requires_class=group_mode(requires, request_unit, n_units, first),
            demand=demand,
            n_requests=np.bincount(request_unit, minlength=n_units).astype(np.int64),
            request_class=group_mode(requests["request_class"].to_numpy(dtype=object), request_unit, n_units, first),
        )

    def __len__(self) -> int:
        return len(self.unit_hash)


def _kind_hash(kind: str, values: np.ndarray) -> np.ndarray:
    return splitmix64(hash_strings(values) ^ _KIND_SALT[kind])


def optional_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame:
        return np.full(len(frame), None, dtype=object)
    values = frame[column].to_numpy(dtype=object, copy=True)
    values[pd.isna(values)] = None
    return values


def first_rows(request_unit: np.ndarray, n_units: int) -> np.ndarray:
    """Index of each unit's first request (writes in reverse: the earliest write lands last)."""
    first = np.empty(n_units, dtype=np.int64)
    first[request_unit[::-1]] = np.arange(len(request_unit) - 1, -1, -1, dtype=np.int64)
    return first


def group_mode(values: np.ndarray, request_unit: np.ndarray, n_units: int, first: np.ndarray | None = None) -> np.ndarray:
    """Most frequent value per unit (ties: the first in order of appearance), None where all are null.

    A unit's requests normally agree; when they do not, this rule is a pure
    function of the unit's requests, so the unit is still placed as one.
    Works on integer codes: the values have few distinct entries.
    """
    if first is None:
        first = first_rows(request_unit, n_units)
    codes, uniques = pd.factorize(values)  # null -> -1
    uniques = np.append(np.asarray(uniques, dtype=object), None)  # code -1 -> None
    candidate = codes[first]
    if (candidate[request_unit] == codes).all():
        return uniques[candidate]  # the common case: every unit's requests agree
    width = len(uniques)
    counts = np.bincount(request_unit * width + (codes + 1), minlength=n_units * width).reshape(n_units, width)
    counts[:, 0] = np.where(counts[:, 1:].any(axis=1), 0, counts[:, 0])  # a value beats null
    return uniques[counts.argmax(axis=1) - 1]
