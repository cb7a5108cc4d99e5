"""The balancer's tables, as TELEMETRY.md (schema_version 1) defines them."""

from __future__ import annotations

import pandas as pd

from .._schema import Column, Rule, Schema, Table, references, set_exactly_when


def _one_group_kind(frames) -> pd.Series:
    requests = frames["requests"]
    return ~(requests["affinity_group"].notna() & requests["anti_affinity_group"].notna())


_positive = dict(min=0.0, strict_min=True)

SERVERS = Table(
    "servers",
    (
        Column("server_id", "string", unique=True, non_empty=True),
        Column("server_class", "string", non_empty=True, drift="distribution"),
        Column("zone", "string", non_empty=True),
        Column("cap_cpu", "float64", drift="mean", **_positive),
        Column("cap_mem", "float64", drift="mean", **_positive),
        Column("cap_io", "float64", drift="mean", **_positive),
    ),
)

REQUESTS = Table(
    "requests",
    (
        Column("ts", "float64", min=0.0),
        Column("key", "string", non_empty=True),
        Column("tenant", "string", non_empty=True),
        Column("request_class", "string", non_empty=True, drift="distribution"),
        Column("requires_class", "string", nullable=True, non_empty=True),
        Column("affinity_group", "string", nullable=True, non_empty=True),
        Column("anti_affinity_group", "string", nullable=True, non_empty=True),
        Column("replica", "int32", nullable=True, min=0),
        Column("cost_cpu", "float64", min=0.0, drift="mean"),
        Column("cost_mem", "float64", min=0.0, drift="mean"),
        Column("cost_io", "float64", min=0.0, drift="mean"),
        Column("server_id", "string", nullable=True),
        # Measured feedback: it moves with the fleet's load, so no drift watch.
        Column("latency_ms", "float64", nullable=True, min=0.0),
    ),
    rules=(
        set_exactly_when("requests", "replica", "anti_affinity_group", name="replica_iff_anti_affinity"),
        Rule("one_group_kind", "at most one of affinity_group and anti_affinity_group is set", _one_group_kind),
        references("requests", "server_id", "servers", noun="server", optional=True),
        references("requests", "requires_class", "servers", "server_class", name="requires_class_in_fleet", optional=True),
    ),
)

SCHEMA = Schema(version=1, tables=(SERVERS, REQUESTS))
