"""Shared fixtures: every test runs against its own project folder (AIPRIM_HOME).

Real components throughout: MLflow on SQLite in a temporary folder, Prefect's
test harness, real Great Expectations suites, real training.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

SMALL_SOURCE = {"servers": 24, "requests": 30000, "keys": 6000, "zipf_offset": 200}


@pytest.fixture(scope="session")
def empty_stores(request, tmp_path_factory) -> Path:
    """An MLflow and a Prefect database with nothing in them, at the installed versions' schemas, made by MLflow
    and Prefect themselves. Each opens a new SQLite file by running every migration it has (about 7 s and 10 s
    here), which every test's project would pay again; a copy of these is the same empty store. Kept in pytest's
    cache between sessions, keyed by both versions."""
    import shutil
    import subprocess
    import sys
    from importlib.metadata import version

    key = f"aiprim-empty-stores-mlflow-{version('mlflow')}-prefect-{version('prefect')}"
    cache = getattr(request.config, "cache", None)
    stores = Path(cache.mkdir(key)) if cache else tmp_path_factory.mktemp("empty-stores")
    if (stores / "complete").exists():
        return stores
    building = Path(tempfile.mkdtemp(dir=stores))
    env = {**os.environ, "PREFECT_HOME": str(building / ".prefect")}
    subprocess.run([sys.executable, "-c", "import mlflow, sys; mlflow.MlflowClient(sys.argv[1]).search_experiments()",
                    f"sqlite:///{building / 'mlruns.db'}"], check=True, env=env, capture_output=True)
    subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"], check=True, env=env,
                   capture_output=True)
    for name in ("mlruns.db", ".prefect/prefect.db"):
        (stores / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(building / name, stores / name)
    shutil.rmtree(building)
    (stores / "complete").touch()
    return stores


def add_empty_stores(home: Path, stores: Path) -> None:
    """Copy the empty MLflow and Prefect databases into a project folder whose PREFECT_HOME is ``home/.prefect``."""
    import shutil

    (home / ".prefect").mkdir(parents=True, exist_ok=True)
    for name in ("mlruns.db", ".prefect/prefect.db"):
        shutil.copyfile(stores / name, home / name)


def nothing_tracked(home: Path) -> bool:
    """No MLflow run, experiment of ours or registered model in the project's store (or no store at all)."""
    import sqlite3

    path = home / "mlruns.db"
    if not path.exists():
        return True
    with sqlite3.connect(path) as db:
        counts = [db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                  for table in ("runs", "registered_models", "experiments")]
    return counts == [0, 0, 1]  # the one experiment is MLflow's own Default


@pytest.fixture
def project(tmp_path, monkeypatch, empty_stores) -> Path:
    """An empty project folder: stores, snapshots and quarantine all live here."""
    monkeypatch.setenv("AIPRIM_HOME", str(tmp_path))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    add_empty_stores(tmp_path, empty_stores)
    return tmp_path


@pytest.fixture(scope="session")
def balancer_tables():
    from aiprim.primitives.balancer._source import generate

    return generate(SMALL_SOURCE, seed=7)


def write_balancer_snapshot(root: Path, tables: dict) -> Path:
    from aiprim import primitives
    from aiprim.primitives._snapshot import write_snapshot

    prim = primitives.get("balancer")
    return write_snapshot("balancer", prim.schema, tables, root, source="tests")


@pytest.fixture
def balancer_snapshot(project, balancer_tables) -> Path:
    return write_balancer_snapshot(project / "data" / "snapshots", balancer_tables)


@pytest.fixture(scope="session")
def trained_balancer(tmp_path_factory, balancer_tables):
    """A balancer runtime trained on the small snapshot (no registry involved)."""
    from aiprim import primitives

    prim = primitives.get("balancer")
    train, held_out = prim.split(balancer_tables, 0.2)
    runtime = prim.train_runtime(train, {"max_epochs": 8, "scenarios_per_epoch": 16, "lr": 0.02}, tmp_path_factory.mktemp("runtime"))
    return runtime, held_out


THIRD_PARTY = Path(__file__).resolve().parent / "thirdparty"  # a primitive from another distribution


def configs_with_profile(root: Path, name: str, profile: dict) -> Path:
    """A copy of the shipped configs under ``root`` with one more profile, ``name``, for ``AIPRIM_CONFIG_DIR``:
    a test's own sizes, while the shipped files (and their profiles) stay as they are."""
    import shutil

    import yaml

    from aiprim.settings import packaged_configs

    configs = Path(root) / "configs"
    shutil.copytree(packaged_configs(), configs, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    pipeline = yaml.safe_load((configs / "pipeline.yaml").read_text())
    pipeline.setdefault("profiles", {})[name] = profile
    (configs / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return configs


def small_profile() -> dict:
    """The shipped ``small`` profile, as configs/pipeline.yaml declares it."""
    import yaml

    from aiprim.settings import packaged_configs

    return yaml.safe_load((packaged_configs() / "pipeline.yaml").read_text())["profiles"]["small"]


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, empty_stores):
    """One real ``aiprim run`` of the small profile, in a subprocess with a project folder of its own:
    the balancer beside the third-party ``admission`` primitive (found through its entry point).
    Its stderr is a pipe, so no progress bars: lines only, as in a log file or CI."""
    import subprocess
    import sys

    home = tmp_path_factory.mktemp("small-run")
    add_empty_stores(home, empty_stores)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "AIPRIM_CONFIG_DIR")}
    env.update(AIPRIM_HOME=str(home), PREFECT_HOME=str(home / ".prefect"), PYTHONPATH=str(THIRD_PARTY),
               # A loaded machine can take more than Prefect's default 20 s to start the temporary API server.
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    command = [sys.executable, "-m", "aiprim.flows.cli", "run", "--primitives", "balancer,admission", "--profile", "small"]
    result = subprocess.run(command, cwd=home, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
    result.env, result.home = env, home
    return result


def pytest_configure(config):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")


# --- query optimizer -----------------------------------------------------------

QUERY_SMALL = {"workloads": ["skewed"], "skewed_scale": 0.2, "queries_per_template": 4, "timeout_ms": 1000.0}


def query_source(tmp_root: Path, **overrides) -> dict:
    """The small query source; its DuckDB file is cached under ``tmp_root`` (same recipe, same file)."""
    return {**QUERY_SMALL, "database_dir": str(tmp_root / "databases"), **overrides}


@pytest.fixture(scope="session")
def query_tables(tmp_path_factory):
    """(tables, manifest extras) of a small skewed workload run on DuckDB under every arm."""
    from aiprim import primitives

    return primitives.get("query").generate(query_source(tmp_path_factory.getbasetemp()), seed=5)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server of our own (initdb in a temporary folder, 127.0.0.1, a free port)."""
    from aiprim.primitives.query._postgres import LocalPostgres

    with LocalPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_workload(postgres_server):
    """The small skewed workload loaded into the test server."""
    from aiprim.primitives.query._workloads import workload_tables, load_postgres

    tables, indexes = workload_tables(["skewed"], QUERY_SMALL["skewed_scale"], 0.0, seed=5)
    load_postgres(postgres_server.dsn, tables, indexes)
    return postgres_server.dsn


# --- compiler cost model -------------------------------------------------------

COMPILER_SMALL = {"tasks_per_family": 3, "schedules_per_task": 8, "repeats": 2, "time_limit_s": 0.2, "max_flops": 2 ** 21,
                  "gpu": False}


def compiler_source(tmp_root: Path, **overrides) -> dict:
    """A small compiler source: tiny shapes, few schedules; compiled libraries cached under ``tmp_root``."""
    return {**COMPILER_SMALL, "cache_dir": str(tmp_root / "kernels"), **overrides}


@pytest.fixture(scope="session")
def compiler_tables(tmp_path_factory):
    """(tables, manifest extras) of small kernels of every CPU family, compiled and timed here."""
    from aiprim import primitives

    return primitives.get("compiler").generate(compiler_source(tmp_path_factory.getbasetemp()), seed=11)
