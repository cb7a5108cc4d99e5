"""Where aiprim keeps things: environment and defaults, at the bottom of the import graph.

Nothing here needs YAML, so loading a runtime works from an installed wheel
with only ``MLFLOW_TRACKING_URI`` set. The pipeline's YAML configuration
(``aiprim.flows.config``) is built on top of these.

- ``AIPRIM_HOME``: the project folder holding every store (data, MLflow,
  Optuna, checkpoints, locks). Default: the source checkout when aiprim runs
  from one (``pip install -e``), else the current directory.
- ``AIPRIM_CONFIG_DIR``: the YAML configs. Default: the configs shipped with
  the package (in a checkout, the repository's ``configs/``).
- ``MLFLOW_TRACKING_URI``: the MLflow store. Default: ``sqlite:///<home>/mlruns.db``.
- ``AIPRIM_CACHE_DIR``: where downloaded runtimes are kept (see ``cache_dir``).
- ``AIPRIM_OPTUNA_STORAGE``: the Optuna storage over the configured one (``aiprim stack up`` writes it).
- ``AIPRIM_MACHINE_DIR``: state of the machine rather than of a project, the machine lock that timed steps hold
  (see ``machine_dir``).
"""

from __future__ import annotations

import os
import tempfile
from importlib.resources import files
from pathlib import Path

DEFAULT_TRACKING_DB = "mlruns.db"
DEFAULT_ARTIFACTS = "mlartifacts"
STATE_DIR = ".aiprim"  # run-time state (locks) under the project folder


def packaged_configs() -> Path:
    """The default configs: package data, which in a source checkout is the repository's ``configs/``."""
    return Path(str(files("aiprim.configs")))


def source_checkout() -> Path | None:
    """The repository root when aiprim runs from a source checkout, else None."""
    root = packaged_configs().parent
    return root if (root / "dvc.yaml").exists() and (root / "pyproject.toml").exists() else None


def home() -> Path:
    explicit = os.environ.get("AIPRIM_HOME")
    if explicit:
        return Path(explicit).resolve()
    return (source_checkout() or Path.cwd()).resolve()


def config_dir() -> Path:
    return Path(os.environ.get("AIPRIM_CONFIG_DIR") or packaged_configs()).resolve()


def state_dir() -> Path:
    path = home() / STATE_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def machine_dir() -> Path:
    """The machine's run-time state, shared by every project of this user: a kernel timed in one project's
    snapshot is disturbed by another project's training as much as by its own (two clones, or DVC's queued
    experiments, each in a workspace of its own). ``AIPRIM_MACHINE_DIR``; else ``$XDG_RUNTIME_DIR/aiprim``; else
    ``<tmp>/aiprim-<uid>``."""
    explicit, runtime = os.environ.get("AIPRIM_MACHINE_DIR"), os.environ.get("XDG_RUNTIME_DIR")
    if explicit:
        path = Path(explicit)
    elif runtime and Path(runtime).is_dir():
        path = Path(runtime) / "aiprim"
    else:
        path = Path(tempfile.gettempdir()) / f"aiprim-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Runtimes downloaded from the registry: ``AIPRIM_CACHE_DIR``; else ``<home>/outputs/runtime_cache``
    in a checkout or with ``AIPRIM_HOME``; else the user's cache folder (never a stray ``./outputs``)."""
    explicit = os.environ.get("AIPRIM_CACHE_DIR")
    if explicit:
        return Path(explicit).resolve()
    if os.environ.get("AIPRIM_HOME") or source_checkout():
        return home() / "outputs" / "runtime_cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aiprim" / "runtimes"


def resolve_path(value: str | Path) -> Path:
    """A configured path: relative ones resolve against the project folder."""
    p = Path(value)
    return p if p.is_absolute() else home() / p


def resolve_uri(uri: str) -> str:
    """Relative sqlite paths resolve against the project folder."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str(home() / uri[len(prefix):])
    return uri


def tracking_uri(configured: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI``, else the configured URI, else SQLite in the project folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or resolve_uri(configured or f"sqlite:///{DEFAULT_TRACKING_DB}")


def artifact_root(configured: str | None = None) -> str:
    """Where new experiments put artifacts: a local folder (made absolute) or a URI."""
    value = configured or DEFAULT_ARTIFACTS
    return value if "://" in value else str(resolve_path(value))


def optuna_storage(configured: str | None = None) -> str:
    """``AIPRIM_OPTUNA_STORAGE``, else the configured URL, else SQLite in the project folder."""
    return os.environ.get("AIPRIM_OPTUNA_STORAGE") or resolve_uri(configured or "sqlite:///optuna.db")


def shown_url(url: str) -> str:
    """A URL fit for a terminal or a log: any user and password in it replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))
