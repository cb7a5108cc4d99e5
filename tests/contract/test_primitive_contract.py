"""Every built-in primitive passes the reusable contract suite (``aiprim.testing``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from aiprim.testing import PrimitiveContract
from tests.conftest import compiler_source, query_source

_CACHE = Path(tempfile.gettempdir()) / "aiprim-contract"  # built databases and compiled kernels, reused across runs


class TestBalancerContract(PrimitiveContract):
    primitive_name = "balancer"
    source_config = {"servers": 12, "requests": 6000, "keys": 1500, "zipf_offset": 100}
    train_params = {"max_epochs": 2, "scenarios_per_epoch": 4}
    evaluate_config = {"disruption_trials": 1}


class TestQueryContract(PrimitiveContract):
    primitive_name = "query"
    source_config = query_source(_CACHE, queries_per_template=3)
    evaluate_config = {"repeats": 1, "warmup": 0}


class TestCompilerContract(PrimitiveContract):
    primitive_name = "compiler"
    source_config = compiler_source(_CACHE, schedules_per_task=5)


class TestSharderContract(PrimitiveContract):
    primitive_name = "sharder"
    source_config = {"workload": "tpcc", "warehouses": 4, "customers_per_district": 5, "catalogue_items": 60,
                     "transactions": 3000, "shards": 2}
    train_params = {"max_epochs": 2, "steps_per_epoch": 4, "txns_per_step": 512}
    evaluate_config = {"disruption_trials": 1}
