"""Configuration: configs/pipeline.yaml + configs/<primitive>.yaml + a profile.

``AIPRIM_HOME`` moves every store (data, MLflow, Optuna, checkpoints) to
another folder; tests use it to run in a temporary directory.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    pass


def home() -> Path:
    return Path(os.environ.get("AIPRIM_HOME", REPO)).resolve()


def config_dir() -> Path:
    return Path(os.environ.get("AIPRIM_CONFIG_DIR", REPO / "configs")).resolve()


def _read(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path.name}: not valid YAML ({error})") from None


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def load(profile: str | None = None) -> dict:
    """The pipeline config, with every primitive's config under ``primitive_configs``.

    The profile defaults to ``AIPRIM_PROFILE`` (so `AIPRIM_PROFILE=small dvc repro` runs small).
    """
    profile = profile or os.environ.get("AIPRIM_PROFILE") or None
    pipeline = _read(config_dir() / "pipeline.yaml")
    profiles = pipeline.pop("profiles", {}) or {}
    if profile and profile not in profiles:
        raise ConfigError(f"unknown profile {profile!r} (known: {', '.join(sorted(profiles)) or 'none'})")
    chosen = profiles.get(profile, {}) if profile else {}
    pipeline["profile"] = profile
    pipeline["primitive_configs"] = {}
    for path in sorted(config_dir().glob("*.yaml")):
        if path.stem != "pipeline":
            pipeline["primitive_configs"][path.stem] = merge(_read(path), chosen.get(path.stem, {}))
    return pipeline


def primitive_config(cfg: dict, name: str) -> dict:
    try:
        return cfg["primitive_configs"][name]
    except KeyError:
        raise ConfigError(f"no config for primitive {name!r}: add configs/{name}.yaml") from None


def path(cfg: dict, key: str) -> Path:
    return resolve_path(cfg["paths"][key])


def resolve_path(value: str | Path) -> Path:
    """A path from the config: relative ones resolve against the project folder."""
    p = Path(value)
    return p if p.is_absolute() else home() / p


def resolve_uri(uri: str) -> str:
    """Relative sqlite paths resolve against the project folder."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str(home() / uri[len(prefix):])
    return uri


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
