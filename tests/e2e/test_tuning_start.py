"""A study tries the configuration first, so tuning only ever replaces it with a point its objective scores better."""

from __future__ import annotations

from aiprim.primitives._params import configured_point


def test_the_configured_point_keeps_the_values_inside_the_space():
    from aiprim.primitives.compiler import CompilerParams

    space = {"lr": {"float": [0.0003, 0.01], "log": True}, "hidden": {"choices": [64, 128, 256]},
             "depth": {"int": [2, 4]}, "weight_decay": {"float": [0.02, 0.03]}}
    params = CompilerParams(lr=0.005, hidden=128, depth=3, weight_decay=0.01)
    assert configured_point(space, params) == {"lr": 0.005, "hidden": 128, "depth": 3}  # 0.01 lies outside [0.02, 0.03]


def test_the_first_trial_of_a_new_study_is_the_configuration(project, balancer_snapshot):
    import optuna

    from aiprim import primitives
    from aiprim.flows import config as cfgmod
    from aiprim.flows import steps

    cfg = cfgmod.load("small")
    steps.tune("balancer", balancer_snapshot, cfg, trials=2)
    from aiprim.settings import optuna_storage

    storage = optuna_storage(cfg["optuna"]["storage"])
    study = optuna.load_study(study_name=steps.study_name("balancer", balancer_snapshot, cfg), storage=storage)
    first, second = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    space = cfgmod.tune_params(cfg, "balancer").space
    configured = configured_point(space, primitives.get("balancer").params(steps.training_params(cfg, "balancer")))
    assert configured and first.params == configured
    assert second.params != configured

    # A rerun continues the study: the configuration is not tried again.
    steps.tune("balancer", balancer_snapshot, cfg, trials=3)
    assert [t.params == configured for t in study.get_trials(deepcopy=False)] == [True, False, False]


def test_an_interrupted_configured_trial_is_run_again(project, balancer_snapshot):
    """Ctrl-C during the configured trial ends tuning at once, without a failed trial's traceback; the rerun
    of the study (same snapshot and config) tries the configuration again and counts only finished trials."""
    import optuna
    import pytest

    from aiprim import primitives
    from aiprim.flows import config as cfgmod
    from aiprim.flows import steps
    from aiprim.flows._interrupt import Interrupted, request_stop, reset
    from aiprim.settings import optuna_storage

    cfg = cfgmod.load("small")
    request_stop()
    try:
        with pytest.raises(Interrupted):
            steps.tune("balancer", balancer_snapshot, cfg, trials=2)
    finally:
        reset()
    study = optuna.load_study(study_name=steps.study_name("balancer", balancer_snapshot, cfg),
                              storage=optuna_storage(cfg["optuna"]["storage"]))
    [interrupted] = study.get_trials(deepcopy=False)
    assert interrupted.state == optuna.trial.TrialState.PRUNED and interrupted.user_attrs == {steps.INTERRUPTED_TRIAL: True}

    steps.tune("balancer", balancer_snapshot, cfg, trials=2)
    space = cfgmod.tune_params(cfg, "balancer").space
    configured = configured_point(space, primitives.get("balancer").params(steps.training_params(cfg, "balancer")))
    after = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)[1:]
    assert [t.state.name for t in after] == ["COMPLETE", "COMPLETE"]
    assert after[0].params == configured and after[1].params != configured
