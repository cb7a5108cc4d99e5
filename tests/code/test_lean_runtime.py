"""The lean runtime path: a model registered in MLflow loads, in a bare process, with numpy, pandas and MLflow only.

For every primitive: train a tiny runtime without tracking, register it in a real
MLflow store (SQLite in a temporary folder) as ``aiprim-<name>`` with alias
``champion``, then in a fresh interpreter whose environment holds only PATH, HOME
and MLFLOW_TRACKING_URI (no AIPRIM_HOME, no PYTHONPATH; cwd outside the
repository) call ``aiprim.load_runtime(name)``, predict on a saved input and check
that neither torch, Lightning, Prefect, Optuna nor Great Expectations was imported.
The predictions must equal those of the runtime trained here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from aiprim import primitives, settings
from tests.conftest import compiler_source, query_source

_CACHE = Path(tempfile.gettempdir()) / "aiprim-contract"  # the contract tests' DuckDB files and compiled kernels
SMALL = {  # the contract tests' small sources
    "balancer": {"servers": 12, "requests": 6000, "keys": 1500, "zipf_offset": 100},
    "query": query_source(_CACHE, queries_per_template=3),
    "compiler": compiler_source(_CACHE, schedules_per_task=5),
    "sharder": {"workload": "tpcc", "warehouses": 4, "customers_per_district": 5, "catalogue_items": 60,
                "transactions": 3000, "shards": 2},
}

HEAVY = ("torch", "lightning", "pytorch_lightning", "lightning_fabric", "prefect", "optuna", "great_expectations")
PARAMS = {"max_epochs": 2, "scenarios_per_epoch": 4, "members": 2,  # tiny; keys a primitive does not declare are dropped
          "steps_per_epoch": 4, "txns_per_step": 512}

# Run in the bare interpreter: argv = primitive name, folder with input.parquet and context/*.parquet.
LOAD_AND_PREDICT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    name, work = sys.argv[1], Path(sys.argv[2])

    from aiprim import load_runtime

    runtime = load_runtime(name)

    import pandas as pd

    frame = pd.read_parquet(work / "input.parquet")
    context = {p.stem: pd.read_parquet(p) for p in sorted((work / "context").glob("*.parquet"))}
    predictions = runtime.predict_frame(frame, context)
    if isinstance(predictions, pd.Series):
        predictions = predictions.to_frame()
    predictions.to_parquet(work / "predictions.parquet")

    from aiprim import settings
    from aiprim.registry import resolve_model, runtime_dir

    run_id, version = resolve_model(name)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    report = {"runtime_class": type(runtime).__name__, "run_id": run_id, "version": version,
              "runtime_dir": str(runtime_dir(name)), "home": str(settings.home()),
              "heavy": sorted({m.split(".")[0] for m in heavy})}
    (work / "report.json").write_text(json.dumps(report))
    print("heavy modules imported:", report["heavy"] or "none")
    sys.exit(3 if heavy else 0)
    """
).replace("HEAVY", repr(HEAVY))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real MLflow store: SQLite and an artifact folder in a temporary directory."""
    return new_store(tmp_path_factory.mktemp("mlflow"))


def new_store(root: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlruns.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.create_experiment("lean-runtime", artifact_location=(root / "artifacts").as_uri())
    return uri, client, experiment_id


def register_champion(client, experiment_id: str, name: str, runtime_dir: Path) -> tuple[str, str]:
    """Log ``runtime_dir`` as a run's ``runtime/`` artifacts; register it as ``aiprim-<name>`` @champion."""
    from aiprim.registry import CHAMPION, RUNTIME_ARTIFACT, model_name

    run = client.create_run(experiment_id, run_name=f"lean-{name}")
    run_id = run.info.run_id
    client.log_artifacts(run_id, str(runtime_dir), artifact_path=RUNTIME_ARTIFACT)
    client.set_terminated(run_id)
    model = model_name(name)
    client.create_registered_model(model)
    version = client.create_model_version(model, source=f"runs:/{run_id}/{RUNTIME_ARTIFACT}", run_id=run_id)
    client.set_registered_model_alias(model, CHAMPION, version.version)
    return run_id, str(version.version)


def larger_input(prim, tables: dict) -> pd.DataFrame:
    """More rows than ``input_example`` (3 to 5), with its columns and dtypes."""
    example = prim.input_example(tables)
    assert isinstance(example, pd.DataFrame) and len(example), f"{prim.name} has no input example"
    if prim.name == "balancer":
        # the example is the head of the requests; take the first 1000 instead
        frame = tables["requests"].head(1000)[list(example.columns)]
    elif prim.name == "compiler":
        # every measured schedule, with its task's kernel and shape
        info = tables["tasks"].set_index("task_id")
        m = tables["measurements"]
        frame = pd.DataFrame({"kernel": m["task_id"].map(info["kernel"]).to_numpy(),
                              "shape": m["task_id"].map(info["shape"]).to_numpy(),
                              "schedule": m["schedule"].to_numpy()})
    elif prim.name == "query":
        frame = tables["queries"][["sql", "probes"]]
    elif prim.name == "sharder":
        frame = tables["items"].head(1000)[list(example.columns)]
    else:  # a primitive added later: its own example (add a larger input here)
        return example
    frame = frame.astype(example.dtypes.to_dict()).reset_index(drop=True)
    assert list(frame.columns) == list(example.columns)
    assert len(frame) > max(5, len(example))
    return frame


def tiny_params(prim) -> dict:
    """``PARAMS`` restricted to the keys the primitive declares (training rejects unknown keys)."""
    declared = getattr(prim, "params_class", None)
    if declared is None:
        return dict(PARAMS)
    known = {f.name for f in dataclasses.fields(declared)}
    return {key: value for key, value in PARAMS.items() if key in known}


def bare_env(tracking_uri: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
            "MLFLOW_TRACKING_URI": tracking_uri}


@pytest.mark.slow
@pytest.mark.parametrize("name", primitives.names())
def test_registered_runtime_loads_lean_and_predicts_the_same(name, store, tmp_path):
    uri, client, experiment_id = store
    prim = primitives.get(name)

    if name not in SMALL:
        pytest.fail(f"add a small source for {name!r} to SMALL in {Path(__file__).name}")
    tables, _ = prim.generate(SMALL[name], seed=3)
    runtime = prim.train_runtime(tables, tiny_params(prim), tmp_path / "runtime")
    run_id, version = register_champion(client, experiment_id, name, tmp_path / "runtime")

    work = tmp_path / "work"  # cwd and data of the bare process, outside the repository
    (work / "context").mkdir(parents=True)
    larger_input(prim, tables).to_parquet(work / "input.parquet")
    for table, df in prim.context_tables(tables).items():
        df.to_parquet(work / "context" / f"{table}.parquet")
    (work / "load_and_predict.py").write_text(LOAD_AND_PREDICT)

    frame = pd.read_parquet(work / "input.parquet")  # the same bytes the bare process reads
    context = {p.stem: pd.read_parquet(p) for p in sorted((work / "context").glob("*.parquet"))}
    expected = runtime.predict_frame(frame, context)
    expected = expected.to_frame() if isinstance(expected, pd.Series) else expected

    # Without AIPRIM_HOME the download cache lands in settings.home()/outputs/runtime_cache/<run id>:
    # the checkout (editable install) or the cwd. Removed afterwards, this run's folder only.
    caches = {base / "outputs" / "runtime_cache" / run_id for base in (settings.source_checkout(), work) if base}
    made = [d for cache in caches for d in (cache.parent, cache.parent.parent) if not d.exists()]  # rmdir'd if left empty
    try:
        result = subprocess.run([sys.executable, str(work / "load_and_predict.py"), name, str(work)], cwd=work,
                                env=bare_env(uri), capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
        report = json.loads((work / "report.json").read_text())
        got = pd.read_parquet(work / "predictions.parquet")
    finally:
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)
        for folder in made:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                pass

    assert report["heavy"] == [], f"heavy modules imported by load_runtime({name!r}): {report['heavy']}"
    assert (report["run_id"], report["version"]) == (run_id, version), "loaded another model than the champion registered here"
    assert report["runtime_class"] == type(runtime).__name__ == prim.runtime_class.__name__
    assert not Path(report["runtime_dir"]).is_relative_to(tmp_path / "runtime"), "must come from the MLflow artifacts"
    assert len(got) == len(frame)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-6, atol=0.0)


def test_a_damaged_runtime_is_fetched_again_and_else_named_in_one_line(tmp_path, monkeypatch, balancer_tables):
    """A cached copy that does not load is replaced by the artifact store's; a damaged copy in the store is
    one line naming the model, never a bare zipfile error. Downloads draw no progress bar in the user's program."""
    from aiprim.registry import RuntimeDamaged, load_runtime

    uri, client, experiment_id = new_store(tmp_path)
    prim = primitives.get("balancer")
    prim.train_runtime(balancer_tables, tiny_params(prim), tmp_path / "runtime")
    run_id, version = register_champion(client, experiment_id, "balancer", tmp_path / "runtime")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("AIPRIM_CACHE_DIR", str(tmp_path / "cache"))

    # In a user's program, where tqdm draws (the tests turn it off at import): no bar, the environment as it was.
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")}
    program = ("import os; from aiprim.registry import load_runtime; load_runtime('balancer'); "
               "print('MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR' in os.environ)")
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False" and "Downloading artifacts" not in done.stderr, done.stderr[-2000:]
    assert type(load_runtime("balancer")).__name__ == "BalancerRuntime"
    cached = tmp_path / "cache" / run_id / "runtime" / "balancer_kernel.npz"
    cached.write_bytes(cached.read_bytes()[:1000])  # damaged after download
    assert type(load_runtime("balancer")).__name__ == "BalancerRuntime"

    stored = next(Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://")).rglob("balancer_kernel.npz"))
    stored.write_bytes(stored.read_bytes()[:1000])
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(RuntimeDamaged, match=rf"^aiprim-balancer champion \(version {version}\): its runtime files do not "
                                             r"load \(BadZipFile: .*\); the artifact store's copy is damaged") as raised:
        load_runtime("balancer")
    assert "\n" not in str(raised.value)
