"""The transfer stage: a population of deployments in the registry, and a ready primitive for a new one.

``population`` draws deployments from a primitive's family (its transfer model's ``draw_deployment``),
and runs each through the declared steps (validate, train, evaluate, register, promote) as its own
deployment ``family-NNNN``, recording the deployment's descriptor on the run and the version (tag
``aiprim.descriptor``, artifact ``descriptor.json``). Rounds accumulate: numbering continues after the
deployments the registry already holds.

``transfer`` validates a snapshot (a failing one is quarantined and never transferred), computes its
descriptor, fits the transfer model over the population the registry holds (or reuses the one logged
for exactly that population), decodes a runtime, optionally fine-tunes it, logs it as an MLflow run,
and registers and promotes it through the normal policy for its deployment: it must beat the classical
peers, and that deployment's champion if it has one.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from aiprim import primitives

from . import config as cfgmod
from .errors import AiprimError

FAMILY_PREFIX = "family-"
DESCRIPTOR_TAG = "aiprim.descriptor"
SNAPSHOT_DIR_TAG = "aiprim.snapshot_dir"
TRANSFER_TAG = "aiprim.transfer"
POPULATION_KEY_TAG = "aiprim.population_key"
TRANSFER_ARTIFACT = "transfer_model"


def _log(message: str) -> None:
    from aiprim._console import log

    log(message)


def _opted_in(name: str):
    prim = primitives.get(name)
    prim.transfer_model()  # raises the one-line "does not opt in" error
    return prim


def stage_primitives(cfg: dict) -> list[str]:
    """The primitives whose transfer stage runs: ``transfer.primitives`` of configs/pipeline.yaml."""
    return list((cfg.get("transfer") or {}).get("primitives") or [])


def check_stage_settings(cfg: dict) -> None:
    """The ``transfer`` section of configs/pipeline.yaml, checked before a run starts anything: every primitive it
    names exists and has a transfer model, and the member profile exists (one line naming what is wrong)."""
    settings = cfg.get("transfer") or {}
    for name in stage_primitives(cfg):
        try:
            _opted_in(name)
        except Exception as error:  # an unknown primitive, or one without a transfer model
            raise cfgmod.ConfigError(f"configs/pipeline.yaml: transfer.primitives: {error}") from None
        _member_config(cfg, name, settings.get("member_profile"))


def _draw_sizes(cfg: dict, name: str) -> dict:
    """Family draw sizes for the profile's source, as the primitive's transfer model reads them (``draw_sizes``)."""
    source = cfgmod.primitive_config(cfg, name).get("source", {}) or {}
    return primitives.get(name).transfer_model().draw_sizes(source)


def _sizes_line(tables: dict) -> str:
    return ", ".join(f"{len(frame)} {table}" for table, frame in tables.items())


def population(name: str, cfg: dict, deployments: int, seed: int | None = None, sizes: dict | None = None) -> list[dict]:
    """Draw, train and register ``deployments`` new deployments of the family; returns one record each."""
    from aiprim.primitives._snapshot import write_snapshot
    from aiprim.registry._deployments import known_deployments
    from aiprim.registry._store import configure

    from .pipeline import run_step, step_named

    if deployments < 1:
        raise AiprimError(f"--deployments: at least 1, not {deployments}")
    prim = _opted_in(name)
    model = prim.transfer_model()
    client = configure()
    try:
        existing = [d for d in known_deployments(client, name) if d.startswith(FAMILY_PREFIX)]
    except Exception:  # noqa: BLE001  (no registered model yet)
        existing = []
    start = 1 + max((int(d[len(FAMILY_PREFIX):]) for d in existing if d[len(FAMILY_PREFIX):].isdigit()), default=-1)
    base_seed = int(cfg.get("seed", 0) if seed is None else seed)
    sizes = sizes or _draw_sizes(cfg, name)
    records = []
    for number in range(start, start + deployments):
        deployment = f"{FAMILY_PREFIX}{number:04d}"
        started = time.perf_counter()
        tables = model.draw_deployment(base_seed * 100_003 + number, **sizes)
        snapshot_dir = write_snapshot(name, prim.schema, tables, cfgmod.path(cfg, "snapshots"),
                                      source=f"aiprim deployment family (seed {base_seed}, member {number})",
                                      extra={"deployment": deployment, "round": 0})
        values = {"snapshot_dir": str(snapshot_dir)}
        values["validation"] = run_step(step_named("validate"), name, cfg, values)
        values["tuned"] = {}
        values["run_id"] = run_step(step_named("train"), name, cfg, values)
        train_part, _ = prim.split(_tables(prim, snapshot_dir), float(cfg["promotion"]["holdout_fraction"]))
        descriptor = prim.describe_deployment(train_part)
        _record_descriptor(client, values["run_id"], descriptor, snapshot_dir)
        values["evaluation"] = run_step(step_named("evaluate"), name, cfg, values)
        values["version"] = run_step(step_named("register"), name, cfg, values)
        decision = run_step(step_named("promote"), name, cfg, values)
        records.append({"deployment": deployment, "version": values["version"],
                        "rows": {table: len(frame) for table, frame in tables.items()}, "promoted": decision["promoted"],
                        prim.primary_metric: values["evaluation"]["metrics"].get(prim.primary_metric),
                        "seconds": round(time.perf_counter() - started, 1)})
        _log(f"{name}: population {deployment} ({_sizes_line(tables)}) -> version {values['version']}")
    return records


def _tables(prim, snapshot_dir: Path) -> dict:
    from aiprim.primitives._snapshot import read_tables

    return read_tables(snapshot_dir, prim.schema)


def _record_descriptor(client, run_id: str, descriptor, snapshot_dir: Path) -> None:
    """On the run (tags are copied to the registered version) and as an artifact beside the runtime."""
    values = [round(float(v), 9) for v in descriptor]
    client.set_tag(run_id, DESCRIPTOR_TAG, json.dumps(values))
    client.set_tag(run_id, SNAPSHOT_DIR_TAG, str(Path(snapshot_dir).resolve()))
    client.log_dict(run_id, {"descriptor": values}, "descriptor.json")


def registered_population(name: str, exclude: str | None = None) -> list[dict]:
    """Every registered version with a descriptor and a snapshot still on disk (the newest per deployment)."""
    import numpy as np

    from aiprim.registry._deployments import DEPLOYMENT_TAG
    from aiprim.registry._store import configure, model_name

    client = configure()
    newest: dict[str, dict] = {}
    for mv in client.search_model_versions(f"name='{model_name(name)}'"):
        deployment = mv.tags.get(DEPLOYMENT_TAG, "default")
        if DESCRIPTOR_TAG not in mv.tags or deployment == exclude or mv.tags.get(TRANSFER_TAG):
            continue
        snapshot_dir = Path(mv.tags.get(SNAPSHOT_DIR_TAG, ""))
        if not (snapshot_dir / "manifest.json").exists():
            continue
        if deployment not in newest or int(mv.version) > int(newest[deployment]["version"]):
            metric = mv.tags.get(f"metric.{primitives.get(name).primary_metric}")
            newest[deployment] = {"deployment": deployment, "version": str(mv.version), "snapshot_dir": snapshot_dir,
                                  "descriptor": np.asarray(json.loads(mv.tags[DESCRIPTOR_TAG]), dtype=np.float64),
                                  "metric": float(metric) if metric is not None else None}
    return [newest[d] for d in sorted(newest)]


def _transfer_model(prim, cfg: dict, members: list[dict]):
    """The transfer model fitted on exactly these members: reused from MLflow when logged before, else fitted and logged."""
    import mlflow

    from aiprim.registry._store import configure, experiment

    model = prim.transfer_model()
    key = cfgmod.config_hash({"members": [(m["deployment"], m["version"]) for m in members],
                              "params": asdict(model.params_class())})
    client = configure()
    experiment_id = experiment(f"{prim.name}-transfer")
    found = client.search_runs([experiment_id], f"tags.`{POPULATION_KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
                               max_results=1)
    if found:
        from mlflow.artifacts import download_artifacts

        run_id = found[0].info.run_id
        # The state is read into memory, so the downloaded copy goes with the folder.
        with tempfile.TemporaryDirectory(prefix="aiprim-transfer-") as tmp:
            state = model.state_class.load(Path(download_artifacts(run_id=run_id, artifact_path=TRANSFER_ARTIFACT,
                                                                   dst_path=tmp)))
        return state, run_id, _registered_version(client, prim.name, run_id, key)
    if len(members) < 2:
        raise AiprimError(f"{prim.name}: the registry holds {len(members)} deployment(s) with a descriptor; "
                          f"grow a population first (`aiprim population {prim.name} --deployments 3`)")
    fraction = float(cfg["promotion"]["holdout_fraction"])
    started = time.perf_counter()
    population = [(prim.split(_tables(prim, m["snapshot_dir"]), fraction)[0], m["descriptor"]) for m in members]
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"transfer-model-{prim.name}",
                          tags={POPULATION_KEY_TAG: key, "aiprim.primitive": prim.name, "aiprim.step": "transfer-fit"}) as run:
        state = model.fit(population, seed=int(cfg.get("seed", 0)))
        mlflow.log_params(asdict(state.params))
        mlflow.log_params({"population.members": len(members)})
        mlflow.log_metric("transfer/train_loss", state.train_loss)
        mlflow.log_dict({"members": [{"deployment": m["deployment"], "version": m["version"]} for m in members]},
                        "population.json")
        with tempfile.TemporaryDirectory() as tmp:
            state.save(Path(tmp) / TRANSFER_ARTIFACT)
            mlflow.log_artifacts(str(Path(tmp) / TRANSFER_ARTIFACT), TRANSFER_ARTIFACT)
            figure = _embedding_plot(state, members, prim.primary_metric)
            if figure is not None:
                mlflow.log_figure(figure, "plots/embedding.png")
    _log(f"{prim.name}: fitted the transfer model on {len(members)} deployments in {time.perf_counter() - started:.1f}s")
    return state, run.info.run_id, _registered_version(client, prim.name, run.info.run_id, key)


def transfer_model_key(name: str) -> str:
    """The registry key of a primitive's transfer model: registered as ``aiprim-<name>-transfer``."""
    return f"{name}-transfer"


def _registered_version(client, name: str, run_id: str, key: str) -> str:
    """The version of ``aiprim-<name>-transfer`` holding this fit's transfer model, registered now if it is new.

    A new one takes the alias ``challenger``; it becomes ``champion`` once a primitive it decoded is promoted
    for its deployment (``_judge_transfer_model``)."""
    from mlflow.exceptions import MlflowException

    from aiprim.registry._promotion import CHALLENGER, model_lock
    from aiprim.registry._store import model_name

    registered = model_name(transfer_model_key(name))
    with model_lock(transfer_model_key(name)):
        try:
            client.get_registered_model(registered)
        except MlflowException:
            client.create_registered_model(registered, description=(
                f"The {name} transfer model: descriptor -> embedding -> a {name} runtime for a deployment, without "
                f"training. One version per population it was fitted on; `champion` is the newest whose decoded {name} "
                f"was promoted for its deployment (aiprim.flows.transfer)."))
        found = client.search_model_versions(f"name='{registered}' and run_id='{run_id}'")
        if found:
            return str(found[0].version)
        version = client.create_model_version(registered, source=f"runs:/{run_id}/{TRANSFER_ARTIFACT}", run_id=run_id,
                                              tags={POPULATION_KEY_TAG: key})
        client.set_registered_model_alias(registered, CHALLENGER, version.version)
        return str(version.version)


def _judge_transfer_model(name: str, version: str, decision, deployment: str) -> dict:
    """The transfer model's own promotion: its version becomes ``champion`` when the primitive it decoded was
    promoted for the deployment (it beat the classical peers, and the deployment's champion if there was one).
    A decoded primitive that was not promoted leaves the transfer model's aliases as they are."""
    from aiprim.registry._promotion import CHAMPION, _set_champion, alias_version, model_lock
    from aiprim.registry._store import configure, model_name

    key = transfer_model_key(name)
    client = configure()
    with model_lock(key):
        if decision.promoted and alias_version(client, key, CHAMPION) != version:
            _set_champion(client, key, version)
            client.set_model_version_tag(model_name(key), version, "aiprim.decision",
                                         f"champion: its {name} for {deployment} was promoted ({decision.reason})")
        return {"version": version, "champion": alias_version(client, key, CHAMPION) == version}


def _embedding_plot(state, members: list[dict], metric: str):
    """Every member as a point of the embedding space (first two principal axes), coloured by its metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    points = np.stack([state.embed(m["descriptor"]) for m in members])
    if len(points) < 2:
        return None
    centred = points - points.mean(axis=0)
    axes = np.linalg.svd(centred, full_matrices=False)[2][:2]
    xy = centred @ axes.T
    if xy.shape[1] < 2:
        xy = np.c_[xy, np.zeros(len(xy))]
    values = np.array([np.nan if m.get("metric") is None else m["metric"] for m in members])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    points = ax.scatter(xy[:, 0], xy[:, 1], c=values, cmap="viridis_r")
    fig.colorbar(points, ax=ax, label=f"{metric} of its champion (held-out)")
    for (x, y), m in zip(xy, members):
        ax.annotate(m["deployment"], (x, y), fontsize=7)
    ax.set_title("deployments in the transfer embedding")
    fig.tight_layout()
    plt.close(fig)
    return fig


def transfer(name: str, snapshot: str, deployment: str, cfg: dict, steps_n: int = 0) -> dict:
    """Decode a runtime for the deployment of ``snapshot``, register it and promote it through the policy."""
    import mlflow

    from aiprim.registry._deployments import check_deployment
    from aiprim.registry._lineage import lineage_tags
    from aiprim.registry._store import configure, experiment

    from . import steps

    prim = _opted_in(name)
    deployment = check_deployment(deployment)
    if steps_n < 0:
        raise AiprimError(f"--steps: 0 or more, not {steps_n}")
    snapshot_path = Path(snapshot)
    if not snapshot_path.exists() and "://" not in snapshot:
        raise AiprimError(f"snapshot {snapshot}: not found")
    snapshot_dir = steps.snapshot(name, cfg, source=snapshot, deployment=deployment)
    steps.validate(name, snapshot_dir, cfg)  # a failing snapshot is quarantined here and never transferred
    train_part, _ = prim.split(_tables(prim, snapshot_dir), float(cfg["promotion"]["holdout_fraction"]))
    descriptor = prim.describe_deployment(train_part)
    members = registered_population(name, exclude=deployment)
    state, model_run, model_version = _transfer_model(prim, cfg, members)
    client = configure()
    experiment(name)
    tags = {**lineage_tags(name, snapshot_dir, {"steps": steps_n}, "transfer"), TRANSFER_TAG: "decoded",
            "aiprim.transfer_model_run": model_run, "aiprim.transfer_model_version": model_version, DESCRIPTOR_TAG: json.dumps([round(float(v), 9) for v in descriptor]),
            SNAPSHOT_DIR_TAG: str(Path(snapshot_dir).resolve())}
    with mlflow.start_run(run_name=f"transfer-{name}-{deployment}", tags=tags) as run:
        with tempfile.TemporaryDirectory() as tmp:
            runtime_dir = Path(tmp) / "runtime"
            runtime = prim.transfer_model().decode(state, descriptor, train_part, runtime_dir, steps=steps_n,
                                                   seed=int(cfg.get("seed", 0)))
            (runtime_dir / "runtime.json").write_text(json.dumps({"primitive": name, "runtime": prim.runtime_class.__qualname__}))
            mlflow.log_params({"transfer.steps": steps_n, "transfer.members": state.members})
            mlflow.log_metric("transfer/decode_seconds", runtime.decode_seconds)
            mlflow.log_dict({"descriptor": [float(v) for v in descriptor]}, "descriptor.json")
            mlflow.log_artifacts(str(runtime_dir), "runtime")
            steps._log_model(prim, runtime_dir, train_part)
    run_id = run.info.run_id
    report = steps.evaluate(name, snapshot_dir, cfg, model=run_id, part="holdout", against_champion=True)
    version = steps.register(name, run_id, report)
    decision = steps.promote(name, version, snapshot_dir, cfg, report)
    judged = _judge_transfer_model(name, model_version, decision, deployment)
    best = report.best_baseline()
    return {"primitive": name, "deployment": deployment, "snapshot": str(snapshot_dir), "run_id": run_id,
            "version": version, "members": state.members, "decode_seconds": round(runtime.decode_seconds, 3),
            "steps": steps_n, "metrics": {prim.primary_metric: report.metrics.get(prim.primary_metric)},
            "best_peer": {"name": best[0], prim.primary_metric: best[1]} if best else None,
            "decision": decision.to_dict(), "transfer_model": judged}


def _member_config(cfg: dict, name: str, profile: str | None) -> dict:
    """``cfg`` with the primitive's config under ``profile`` (a profile of configs/pipeline.yaml), everything
    else (stores, task runner) as it is: population members train in seconds without moving the run's stores."""
    if not profile:
        return cfg
    profiles = cfgmod._read(cfgmod.config_dir() / "pipeline.yaml").get("profiles", {}) or {}
    if profile not in profiles:
        raise cfgmod.ConfigError(f"transfer.member_profile: unknown profile {profile!r} (known: {', '.join(sorted(profiles))})")
    out = dict(cfg)
    out["primitive_configs"] = {**cfg["primitive_configs"],
                                name: cfgmod.merge(cfg["primitive_configs"].get(name, {}), profiles[profile].get(name, {}))}
    cfgmod.primitive_config(out, name)  # a profile with a mistyped key fails here, naming it
    return out


def _next_family_number(name: str) -> int:
    from aiprim.registry._deployments import known_deployments
    from aiprim.registry._store import configure

    try:
        existing = known_deployments(configure(), name)
    except Exception:  # noqa: BLE001  (no registered model yet)
        existing = []
    numbers = [int(d[len(FAMILY_PREFIX):]) for d in existing if d.startswith(FAMILY_PREFIX) and d[len(FAMILY_PREFIX):].isdigit()]
    return 1 + max(numbers, default=-1)


def stage(name: str, cfg: dict) -> dict:
    """The transfer stage of ``aiprim run`` for one primitive that opts in (``transfer`` in configs/pipeline.yaml).

    Grows the registry's population to ``population`` drawn deployments (trained with ``member_profile``),
    then draws ``new_deployments`` deployments nobody trained on and gives each a primitive decoded from its
    descriptor, without training, registered and promoted through the policy as that deployment's champion
    only where it beats the classical peers (benchmarks/transfer.py measures how close that comes to training).
    """
    settings = cfg.get("transfer") or {}
    member_cfg = _member_config(cfg, name, settings.get("member_profile"))
    members = registered_population(name)
    grown = []
    missing = int(settings.get("population", 3)) - len(members)
    if missing > 0:
        grown = population(name, member_cfg, missing)
    decoded = []
    prim = _opted_in(name)
    sizes = _draw_sizes(member_cfg, name)
    seed = int(cfg.get("seed", 0))
    for _ in range(int(settings.get("new_deployments", 1))):
        number = _next_family_number(name)
        deployment = f"{FAMILY_PREFIX}{number:04d}"
        tables = prim.transfer_model().draw_deployment(seed * 100_003 + number, **sizes)
        with tempfile.TemporaryDirectory(prefix="aiprim-transfer-") as tmp:
            from aiprim.primitives._snapshot import write_snapshot

            drawn = write_snapshot(name, prim.schema, tables, Path(tmp),
                                   source=f"aiprim deployment family (seed {seed}, member {number}, never trained on)",
                                   extra={"deployment": deployment, "round": 0})
            result = transfer(name, str(drawn), deployment, member_cfg)
        decoded.append(result)
        peer = result.get("best_peer") or {}
        _log(f"{name}: transferred to {deployment} (no training): {prim.primary_metric} "
             f"{result['metrics'][prim.primary_metric]:.4g} vs best peer {peer.get('name')} {peer.get(prim.primary_metric, float('nan')):.4g}; "
             f"{'promoted' if result['decision']['promoted'] else 'not promoted'}")
    return {"primitive": name, "population": len(members) + len(grown), "grown": grown, "decoded": decoded}


def stage_summary(done: dict) -> dict:
    """What a run records of ``stage``'s result: the population's size and each decoded deployment's outcome."""
    return {"population": done["population"], "grown": len(done["grown"]),
            "decoded": [{"deployment": d["deployment"], "version": d["version"],
                         "promoted": d["decision"]["promoted"], "transfer_model": d["transfer_model"],
                         "metrics": d["metrics"], "best_peer": d.get("best_peer")}
                        for d in done["decoded"]]}
