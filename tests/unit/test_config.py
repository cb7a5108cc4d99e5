"""Configs are checked against the primitives' typed params: a misspelt key is one line naming it."""

from __future__ import annotations

import pytest

from aiprim.flows import config
from aiprim.flows.cli import main
from aiprim.settings import packaged_configs
from tests.conftest import nothing_tracked


@pytest.fixture
def config_dir(tmp_path, monkeypatch, project):
    folder = tmp_path / "configs"
    folder.mkdir()
    for path in packaged_configs().glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    monkeypatch.setenv("AIPRIM_CONFIG_DIR", str(folder))
    return folder


def _edit(folder, name, old, new):
    path = folder / f"{name}.yaml"
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}: update this test"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("config, old, new, message", [
    ("balancer", "  lr: 0.01\n", "  lrr: 0.01\n", "configs/balancer.yaml: train: unknown key 'lrr' (did you mean 'lr'?"),
    ("balancer", "  lr: 0.01\n", "  lr: fast\n", "configs/balancer.yaml: train.lr: 'fast' is not of type float"),
    ("balancer", "  trials: 6\n", "  trails: 6\n", "configs/balancer.yaml: tune: unknown key 'trails' (did you mean 'trials'?"),
    ("balancer", "    hidden: {choices: [16, 32, 64]}\n", "    hiddn: {choices: [16, 32, 64]}\n",
     "configs/balancer.yaml: tune.space.hiddn: not a training parameter (did you mean 'hidden'?"),
    ("balancer", "    spread_weight: {float: [1.0, 4.0]}\n", "    spread_weight: {float: [4.0, 1.0]}\n",
     "tune.space.spread_weight: float needs [low, high] with low <= high"),
    ("compiler", "  tree_weight: 0.5 ", "  tree_weight: 1.5 ", "configs/compiler.yaml: train.tree_weight: 1.5 is outside [0.0, 1.0]"),
    ("query", "  val_fraction: 0.2", "  val_fraction: 1.5", "configs/query.yaml: train.val_fraction: 1.5 is outside [0.0, 0.9]"),
    ("compiler", "    depth: {int: [2, 4]}", "    depth: {int: [0, 4]}",
     "configs/compiler.yaml: tune.space.depth: 0 is outside the parameter's range [1, None]"),
    ("balancer", "evaluate:\n", "evaluation:\n", "configs/balancer.yaml: unknown section 'evaluation'"),
    ("balancer", "  zones: 3\n", "  zone: 3\n", "configs/balancer.yaml: source: unknown key 'zone' (did you mean 'zones'?"),
    ("balancer", "  disruption_trials: 5\n", "  disruption_trails: 5\n",
     "configs/balancer.yaml: evaluate: unknown key 'disruption_trails' (did you mean 'disruption_trials'?"),
    ("pipeline", "  primitives: [balancer, sharder]  # the primitives whose stage", "  primitives: [query]  # the primitives whose stage",
     "configs/pipeline.yaml: transfer.primitives: query does not opt in to transfer"),
    ("pipeline", "  member_profile: small ", "  member_profile: smal ", "transfer.member_profile: unknown profile 'smal'"),
    # PyYAML's message spans five lines: one, with the place.
    ("balancer", "  lr: 0.01\n", "  lr: [0.01\n",
     "balancer.yaml line 18, column 9: not valid YAML (while parsing a flow sequence from line 17, column 7: expected "
     "',' or ']', but got ':')"),
])
def test_a_bad_config_is_refused_before_anything_runs(config_dir, project, capsys, config, old, new, message):
    _edit(config_dir, config, old, new)
    assert main(["run", "--primitives", "balancer" if config == "pipeline" else config]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert nothing_tracked(project) and not (project / "data").exists(), "nothing ran"


def test_typed_params_carry_the_config_and_the_defaults(config_dir):
    from aiprim import primitives

    cfg = config.load()
    params = primitives.get("balancer").params(config.primitive_config(cfg, "balancer")["train"])
    assert params.lr == 0.01 and params.unknown_class_rate == 0.1  # from the YAML, and a declared default
    assert isinstance(params.lr, float)


def test_a_primitive_without_a_config_file_runs_on_its_defaults(config_dir):
    (config_dir / "compiler.yaml").unlink()
    assert config.primitive_config(config.load(), "compiler") == {}


@pytest.mark.parametrize("value, message", [
    ("abc", "configs/compiler.yaml: evaluate: a promotion guardrail setting is invalid: could not convert string to float"),
    ("-0.1", "configs/compiler.yaml: evaluate: a promotion guardrail setting is invalid: top1_tolerance must be in [0, 1)"),
])
def test_a_bad_guardrail_setting_is_refused_before_anything_runs(config_dir, project, capsys, value, message):
    _edit(config_dir, "compiler", "  top1_tolerance: 0.02 ", f"  top1_tolerance: {value} ")
    assert main(["run", "--primitives", "compiler"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert nothing_tracked(project) and not (project / "data").exists(), "nothing ran"


def test_every_declared_range_holds_its_default():
    import dataclasses

    from aiprim import primitives

    for name in primitives.names():
        for f in dataclasses.fields(primitives.get(name).params_class):
            low, high = f.metadata.get("range", (None, None))
            assert (low is None or f.default >= low) and (high is None or f.default <= high), (name, f.name)


def test_a_new_project_folder_and_prefect_home_are_made_before_prefect_starts(tmp_path, monkeypatch):
    # Prefect makes its home without parents: under a new AIPRIM_HOME its throwaway server could not open its
    # database, and the run failed only after the server's start-up timeout (minutes).
    from aiprim.flows.cli import _prepare_environment

    project = tmp_path / "new" / "project"
    monkeypatch.setenv("AIPRIM_HOME", str(project))
    monkeypatch.setenv("PREFECT_HOME", str(project / "state" / "prefect"))
    _prepare_environment()
    assert project.is_dir() and (project / "state" / "prefect").is_dir()


def test_a_project_folder_that_cannot_be_made_is_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("AIPRIM_HOME", str(blocker / "project"))
    monkeypatch.setenv("PREFECT_HOME", str(blocker / "project" / ".prefect"))
    with pytest.raises(SystemExit) as exited:
        main(["status"])
    assert str(exited.value).startswith(f"aiprim: error: cannot create {blocker / 'project'}")
    assert "\n" not in str(exited.value)


def test_retries_repeat_io_never_bad_input():
    from aiprim.flows.config import ConfigError
    from aiprim.flows.errors import AiprimError, retry_can_help
    from aiprim.primitives._snapshot import SnapshotError

    assert retry_can_help(ConnectionRefusedError("mlflow is restarting")) and retry_can_help(TimeoutError())
    assert not any(retry_can_help(e) for e in (SnapshotError("table servers: missing"), ConfigError("bad key"),
                                               KeyError("no such primitive"), TypeError("wrong argument")))
    assert not retry_can_help(AiprimError("snapshot abc: table servers, column cap_cpu: 1 rows out of range"))


def test_evaluate_prints_one_row_per_metric_with_whole_names(capsys):
    from aiprim.flows.cli import _print_report
    from aiprim.primitives._report import EvaluationReport

    report = EvaluationReport(
        primitive="sharder", primary_metric="distributed_txn_rate", higher_is_better=False,
        candidates={"learned": {"distributed_txn_rate": 0.0856, "disruption_ratio_add": 0.21, "disruption_ratio_remove": 1.0}},
        baselines={"weighted_rendezvous": {"distributed_txn_rate": 0.957, "disruption_ratio_add": 1.007}})
    _print_report(report)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["metric", "learned", "weighted_rendezvous"]
    rows = {line.lstrip("* ").split()[0]: line for line in lines[1:]}
    assert set(rows) == {"disruption_ratio_add", "disruption_ratio_remove", "distributed_txn_rate"}
    assert rows["distributed_txn_rate"].startswith("* ") and rows["disruption_ratio_remove"].split()[-1] == "-"


def test_train_with_negative_trials_is_one_line(project, capsys):
    from aiprim.flows.cli import main

    assert main(["train", "balancer", str(project / "any-snapshot"), "--trials", "-1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["aiprim: error: --trials: 0 or more, not -1"], err


def test_the_command_line_says_its_version(capsys):
    import aiprim

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"aiprim {aiprim.__version__}"
