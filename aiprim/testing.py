"""The primitive contract as a reusable test suite (as ``optuna.testing`` does for samplers).

A primitive, built in or your own, passes it by subclassing in a test module::

    from aiprim.testing import PrimitiveContract

    class TestMyPrimitive(PrimitiveContract):
        primitive_name = "my_primitive"
        source_config = {"rows": 2000}          # a small embedded source
        train_params = {"max_epochs": 2}

Needs pytest (``pip install aiprim[dev]``); nothing here runs at import.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

HEAVY_MODULES = ("torch", "lightning", "prefect", "optuna", "great_expectations")


class PrimitiveContract:
    """What every registered primitive must do. Override the class attributes; add tests of your own beside."""

    primitive_name: ClassVar[str]
    source_config: ClassVar[dict] = {}      # the embedded source's config for a small snapshot
    train_params: ClassVar[dict] = {"max_epochs": 2}
    evaluate_config: ClassVar[dict] = {}    # the primitive's evaluate section, kept small
    holdout_fraction: ClassVar[float] = 0.25
    seed: ClassVar[int] = 3

    # --- fixtures -----------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def primitive(cls):
        from aiprim import primitives

        return primitives.get(cls.primitive_name)

    @pytest.fixture(scope="class")
    @classmethod
    def generated(cls, primitive) -> tuple[dict, dict]:
        """(tables, manifest extras) of one small snapshot, generated once for the class."""
        return primitive.generate(dict(cls.source_config), seed=cls.seed)

    @pytest.fixture(scope="class")
    @classmethod
    def trained(cls, primitive, generated, tmp_path_factory):
        """(runtime directory, runtime, held-out tables) of a model trained on the training part."""
        tables, _ = generated
        train, held_out = primitive.split(tables, cls.holdout_fraction)
        directory = tmp_path_factory.mktemp(f"{cls.primitive_name}-runtime")
        runtime = primitive.train_runtime(train, dict(cls.train_params), directory, seed=cls.seed)
        return directory, runtime, held_out

    @pytest.fixture
    def project_home(self, tmp_path, monkeypatch) -> Path:
        monkeypatch.setenv("AIPRIM_HOME", str(tmp_path))
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        return tmp_path

    def evaluation_context(self, generated) -> dict[str, Any]:
        return {**self.evaluate_config, "manifest": generated[1]}

    # --- declaration --------------------------------------------------------
    def test_declares_its_contract(self, primitive):
        from aiprim import primitives
        from aiprim.primitives import HoldOut, Peer, TrainParams

        assert primitive.name in primitives.names()
        assert primitive.schema.version >= 1 and primitive.schema.tables
        assert isinstance(primitive.primary_metric, str) and isinstance(primitive.higher_is_better, bool)
        assert isinstance(primitive.holdout, HoldOut), "declare the held-out split as data (aiprim.primitives.HoldOut)"
        assert issubclass(primitive.params_class, TrainParams) and dataclasses.is_dataclass(primitive.params_class)
        assert primitive.peers and all(isinstance(p, Peer) for p in primitive.peers)
        assert any(not p.reference_only for p in primitive.peers), "a deployable classical peer is the first bar"
        assert primitive.guardrails({}), "a primitive without guardrails can never be held back"

    def test_every_param_has_a_default(self, primitive):
        params = primitive.params({})
        assert params.max_epochs >= 1

    def test_a_misspelt_param_is_one_line_naming_it(self, primitive):
        from aiprim.primitives import ParamsError

        with pytest.raises(ParamsError, match=r"unknown key 'max_epochz'.*did you mean 'max_epochs'"):
            primitive.params({"max_epochz": 3})

    def test_its_config_fits_its_params(self, primitive):
        import yaml

        from aiprim.flows import config

        profiles = yaml.safe_load((config.config_dir() / "pipeline.yaml").read_text()).get("profiles") or {}
        for profile in [None, *profiles]:  # raises ConfigError naming the key
            config.primitive_config(config.load(profile), primitive.name)

    def test_unknown_name_is_a_clear_error(self):
        from aiprim import primitives

        with pytest.raises(primitives.UnknownPrimitiveError, match="unknown primitive 'nope'.*known: "):
            primitives.get("nope")

    # --- telemetry ----------------------------------------------------------
    def test_generated_snapshot_validates(self, primitive, generated, project_home):
        from aiprim.flows import config, steps
        from aiprim.primitives._snapshot import write_snapshot

        tables, extra = generated
        directory = write_snapshot(primitive.name, primitive.schema, tables, project_home / "snap", "test", extra)
        report = steps.validate(primitive.name, directory, config.load())
        assert report.ok, report.failures

    def test_split_is_deterministic_and_disjoint(self, primitive, generated):
        tables, _ = generated
        a_train, a_held = primitive.split(tables, self.holdout_fraction)
        b_train, b_held = primitive.split(tables, self.holdout_fraction)
        for name in a_train:
            assert a_train[name].equals(b_train[name]) and a_held[name].equals(b_held[name])
        main = primitive.holdout.table
        assert 0 < len(a_held[main]) < len(tables[main]), "something, not everything, is held out"
        assert len(a_train[main]) + len(a_held[main]) == len(tables[main])

    # --- runtime --------------------------------------------------------------
    def test_runtime_persists_as_npz_and_json(self, primitive, trained):
        directory, runtime, _ = trained
        files = {p.suffix for p in Path(directory).rglob("*") if p.is_file()}
        assert files <= {".npz", ".json"}, f"runtime files must load without unpickling: {sorted(files)}"
        assert type(primitive.load_runtime(directory)) is type(runtime)

    def test_runtime_import_stays_light(self, primitive):
        code = (
            "import sys; from aiprim import primitives, registry; primitives.get(%r).runtime_class; "
            "heavy = [m for m in %r if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
            % (primitive.name, HEAVY_MODULES)
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr

    # --- evaluation -------------------------------------------------------------
    def test_evaluates_beside_every_declared_peer(self, primitive, trained, generated):
        _, runtime, held_out = trained
        report = primitive.evaluate(runtime, held_out, self.evaluation_context(generated))
        assert primitive.primary_metric in report.metrics
        assert set(report.baselines) == {p.name for p in primitive.peers}
        for peer in report.baselines.values():
            assert primitive.primary_metric in peer
        assert report.reference_baselines == tuple(p.name for p in primitive.peers if p.reference_only)
        again = type(report).from_dict(json.loads(json.dumps(report.to_dict())))
        assert again.candidates == report.candidates and again.best_baseline() == report.best_baseline()

    def test_a_model_scored_beside_itself_ties(self, primitive, trained, generated):
        """Challenger and champion are scored in one session: the same model twice gets the same score."""
        _, runtime, held_out = trained
        report = primitive.evaluate({"learned": runtime, "champion": runtime}, held_out,
                                    {**self.evaluation_context(generated), "baselines": False})
        assert report.baselines == {}
        assert report.primary("learned") == pytest.approx(report.primary("champion"))

    def test_transfer_is_opted_in_whole_or_refused_in_one_line(self, primitive, generated):
        """A primitive that opts in to transfer describes a deployment by a finite vector of fixed length and
        has a transfer model that can draw, fit and decode; one that does not says so in one line."""
        import numpy as np

        from aiprim.primitives._base import TransferNotSupported

        tables, _ = generated
        if not primitive.supports_transfer:
            with pytest.raises(TransferNotSupported, match="does not opt in to transfer"):
                primitive.transfer_model()
            return
        train, held_out = primitive.split(tables, self.holdout_fraction)
        first, second = primitive.describe_deployment(train), primitive.describe_deployment(held_out)
        assert first.ndim == 1 and first.shape == second.shape and np.isfinite(first).all()
        model = primitive.transfer_model()
        assert all(callable(getattr(model, name, None)) for name in ("draw_deployment", "fit", "decode"))
