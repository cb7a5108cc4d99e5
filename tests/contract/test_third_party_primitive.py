"""A primitive from another distribution (tests/thirdparty/), found through the
``aiprim.primitives`` entry point, passes the contract and runs through ``aiprim run``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aiprim.testing import PrimitiveContract
from tests.conftest import THIRD_PARTY



@pytest.fixture(scope="module", autouse=True)
def installed_third_party():
    """What ``pip install`` of that distribution leaves: its package and dist-info on the path."""
    sys.path.insert(0, str(THIRD_PARTY))
    yield
    sys.path.remove(str(THIRD_PARTY))


class TestAdmissionContract(PrimitiveContract):
    primitive_name = "admission"
    source_config = {"requests": 3000}
    train_params = {"max_epochs": 5}

    def test_runtime_import_stays_light(self, primitive, monkeypatch):
        monkeypatch.setenv("PYTHONPATH", str(THIRD_PARTY))
        super().test_runtime_import_stays_light(primitive)

    def test_learns_better_than_its_peers(self, primitive, trained, generated):
        _, runtime, held_out = trained
        report = primitive.evaluate(runtime, held_out, {})
        assert report.metrics["error_rate"] < report.best_baseline()[1]


@pytest.mark.slow
def test_aiprim_run_trains_registers_and_promotes_it(small_run):
    status = subprocess.run([sys.executable, "-m", "aiprim.flows.cli", "status", "--json"], env=small_run.env,
                            capture_output=True, text=True, timeout=120)
    champion = json.loads(status.stdout)["admission"]
    assert champion["version"] == "1" and champion["metrics"]["error_rate"] < 0.5
    assert "admission: version 1 promoted to champion" in small_run.stderr
