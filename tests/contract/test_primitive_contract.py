"""One contract, every registered primitive (as Optuna tests every sampler)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aiprim import primitives
from aiprim.primitives import Primitive

import tempfile
from pathlib import Path

from tests.conftest import compiler_source, query_source

SMALL = {
    "balancer": {"servers": 12, "requests": 6000, "keys": 1500, "zipf_offset": 100},
    "query": query_source(Path(tempfile.gettempdir()) / "aiprim-contract", queries_per_template=3),
    "compiler": compiler_source(Path(tempfile.gettempdir()) / "aiprim-contract", schedules_per_task=5),
}


@pytest.fixture(params=primitives.names())
def prim(request) -> Primitive:
    return primitives.get(request.param)


class TestPrimitiveContract:
    def test_declares_its_contract(self, prim):
        assert prim.name in primitives.names()
        assert prim.schema.version >= 1 and prim.schema.tables
        assert isinstance(prim.primary_metric, str)
        assert prim.guardrails({}), "a primitive without guardrails can never be held back"

    def test_unknown_name_is_a_clear_error(self):
        with pytest.raises(primitives.UnknownPrimitiveError, match="unknown primitive 'nope'.*known: "):
            primitives.get("nope")

    def test_generated_snapshot_validates(self, prim, project):
        from aiprim.flows import config, steps
        from aiprim.primitives._snapshot import write_snapshot

        tables, extra = prim.generate(SMALL[prim.name], seed=1)
        directory = write_snapshot(prim.name, prim.schema, tables, project / "snap", "test", extra)
        report = steps.validate(prim.name, directory, config.load())
        assert report.ok, report.failures

    def test_split_is_deterministic_and_disjoint(self, prim):
        tables, _ = prim.generate(SMALL[prim.name], seed=2)
        a_train, a_held = prim.split(tables, 0.25)
        b_train, b_held = prim.split(tables, 0.25)
        for name in a_train:
            assert a_train[name].equals(b_train[name]) and a_held[name].equals(b_held[name])
        assert any(len(a_held[n]) < len(tables[n]) for n in tables), "something must be held out"

    def test_train_export_load_evaluate(self, prim, tmp_path):
        tables, extra = prim.generate(SMALL[prim.name], seed=3)
        train, held_out = prim.split(tables, 0.2)
        runtime = prim.train_runtime(train, {"max_epochs": 2, "scenarios_per_epoch": 4}, tmp_path)
        assert type(prim.load_runtime(tmp_path)) is type(runtime)
        report = prim.evaluate(runtime, held_out, {"disruption_trials": 1, "repeats": 1, "warmup": 0, "manifest": extra})
        assert prim.primary_metric in report["metrics"]
        assert report["baselines"], "every primitive is scored beside classical peers"
        for peer in report["baselines"].values():
            assert prim.primary_metric in peer

    def test_runtime_import_stays_light(self, prim):
        code = (
            "import sys; from aiprim import primitives, registry; primitives.get(%r).runtime_class; "
            "heavy = [m for m in ('lightning', 'prefect', 'optuna', 'great_expectations') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)" % prim.name
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_evaluate_can_skip_the_peers(self, prim, tmp_path):
        tables, extra = prim.generate(SMALL[prim.name], seed=4)
        runtime = prim.train_runtime(tables, {"max_epochs": 1, "scenarios_per_epoch": 2}, tmp_path)
        report = prim.evaluate(runtime, tables, {"disruption_trials": 1, "repeats": 1, "warmup": 0, "baselines": False, "manifest": extra})
        assert report["baselines"] == {} and prim.primary_metric in report["metrics"]
