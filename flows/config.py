"""The pipeline's configuration: configs/pipeline.yaml + configs/<primitive>.yaml + a profile.

Where things live (``AIPRIM_HOME``, ``AIPRIM_CONFIG_DIR``) is
``aiprim.settings``; this module adds the YAML on top.
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path

import yaml

from .._hashing import config_hash
from ..settings import config_dir, home, resolve_path, resolve_uri

__all__ = ["ConfigError", "config_dir", "config_hash", "file_profile", "home", "load", "merge", "path", "primitive_config",
           "resolve_path", "resolve_uri"]


class ConfigError(ValueError):
    pass


def _read(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as error:
        # PyYAML's message spans lines ("while parsing ...", "  in <file>, line 16", ...): one line of it, and where.
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        context, started = getattr(error, "context", None), getattr(error, "context_mark", None)
        if context and started is not None:
            context += f" from line {started.line + 1}, column {started.column + 1}"
        what = ": ".join(part for part in (context, getattr(error, "problem", None)) if part)
        raise ConfigError(f"{path}{where}: not valid YAML ({what or str(error).splitlines()[0]})") from None


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def file_profile() -> str | None:
    """The profile configs/pipeline.yaml names (its ``profile`` key), which DVC stages track as a param."""
    return _read(config_dir() / "pipeline.yaml").get("profile") or None


def load(profile: str | None = None) -> dict:
    """The pipeline config, with every primitive's config under ``primitive_configs``.

    The profile defaults to ``AIPRIM_PROFILE``, then to the file's own ``profile`` key (what DVC stages track).
    """
    pipeline = _read(config_dir() / "pipeline.yaml")
    profile = profile or os.environ.get("AIPRIM_PROFILE") or pipeline.get("profile") or None
    profiles = pipeline.pop("profiles", {}) or {}
    if profile and profile not in profiles:
        raise ConfigError(f"unknown profile {profile!r} (known: {', '.join(sorted(profiles)) or 'none'})")
    chosen = profiles.get(profile, {}) if profile else {}
    # A profile's `pipeline:` overrides this file's own sections (e.g. the task runner), so a profile can
    # change how the flow runs as well as what each primitive does. `pipeline` can never name a primitive:
    # pipeline.yaml is not a primitive's config.
    overrides = chosen.get("pipeline") or {}
    unknown = sorted(set(overrides) - set(pipeline))
    if unknown:
        raise ConfigError(f"profile {profile!r}: pipeline: unknown section {unknown[0]!r} "
                          f"(known: {', '.join(sorted(pipeline))})")
    pipeline = merge(pipeline, overrides)
    pipeline["profile"] = profile
    pipeline["primitive_configs"] = {}
    for path in sorted(config_dir().glob("*.yaml")):
        if path.stem != "pipeline":
            pipeline["primitive_configs"][path.stem] = merge(_read(path), chosen.get(path.stem, {}))
    from ..registry._store import use_store

    mlflow_cfg = pipeline.get("mlflow", {})
    # Kept as configured (relative paths resolve against AIPRIM_HOME when used, not now).
    use_store(mlflow_cfg.get("tracking_uri"), mlflow_cfg.get("artifact_location"))
    return pipeline


SECTIONS = ("source", "train", "tune", "evaluate")


def primitive_config(cfg: dict, name: str) -> dict:
    """The primitive's config (``configs/<name>.yaml`` with the profile over it), its sections checked.

    A primitive without a YAML file runs on its declared defaults (a third-party primitive's
    typed params carry them).
    """
    from .. import primitives
    from ..primitives._params import ParamsError, TuneParams, check_space, parse_params

    prim = primitives.get(name)
    pcfg = cfg["primitive_configs"].get(name, {})
    where = f"configs/{name}.yaml"
    for section in pcfg:
        if section not in SECTIONS:
            raise ConfigError(f"{where}: unknown section {section!r} (known: {', '.join(SECTIONS)})")
    for section in ("source", "evaluate"):
        known = prim.config_keys(section)
        for key in (pcfg.get(section) or {}) if known is not None else ():
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(f"{where}: {section}: unknown key {key!r} ({hint}known: {', '.join(sorted(known))})")
    try:
        prim.guardrails(pcfg.get("evaluate") or {})  # a guardrail bound that is not a number fails here, not at promotion
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: evaluate: a promotion guardrail setting is invalid: {error}") from None
    try:
        prim.params(pcfg.get("train"), where=f"{where}: train")
        tune = parse_params(TuneParams, pcfg.get("tune"), f"{where}: tune")
        check_space(tune.space, prim.params_class, f"{where}: tune.space")
    except ParamsError as error:
        raise ConfigError(str(error)) from None
    return pcfg


def tune_params(cfg: dict, name: str):
    """The typed ``tune`` section: trials, epochs per trial and the search space."""
    from ..primitives._params import TuneParams, parse_params

    return parse_params(TuneParams, primitive_config(cfg, name).get("tune"), f"configs/{name}.yaml: tune")


def path(cfg: dict, key: str) -> Path:
    return resolve_path(cfg["paths"][key])

