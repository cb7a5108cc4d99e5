"""The pipeline's configuration: configs/pipeline.yaml + configs/<primitive>.yaml + a profile.

Where things live (``AIPRIM_HOME``, ``AIPRIM_CONFIG_DIR``) is
``aiprim.settings``; this module adds the YAML on top.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from .._hashing import config_hash
from ..settings import config_dir, home, resolve_path, resolve_uri

__all__ = ["ConfigError", "config_dir", "config_hash", "home", "load", "merge", "path", "primitive_config",
           "resolve_path", "resolve_uri"]


class ConfigError(ValueError):
    pass


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
    from ..registry._store import use_store

    mlflow_cfg = pipeline.get("mlflow", {})
    use_store(resolve_uri(mlflow_cfg["tracking_uri"]) if mlflow_cfg.get("tracking_uri") else None, mlflow_cfg.get("artifact_location"))
    return pipeline


def primitive_config(cfg: dict, name: str) -> dict:
    try:
        return cfg["primitive_configs"][name]
    except KeyError:
        raise ConfigError(f"no config for primitive {name!r}: add configs/{name}.yaml") from None


def path(cfg: dict, key: str) -> Path:
    return resolve_path(cfg["paths"][key])

