"""Typed training parameters and Optuna search spaces declared as data.

A primitive declares its training parameters as a frozen dataclass derived
from ``TrainParams``; ``parse_params`` builds it from a config section and
rejects an unknown or misspelt key with one line naming it (a silently
dropped key is a run that did not do what its config says). Search spaces
live in ``configs/<primitive>.yaml`` under ``tune.space``::

    space:
      lr: {float: [0.003, 0.1], log: true}
      hidden: {choices: [16, 32, 64]}
      depth: {int: [2, 4]}
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from dataclasses import dataclass


class ParamsError(ValueError):
    """A config section that does not fit its declared parameters (one readable line)."""


def bounded(default, low=None, high=None):
    """A field whose values must lie in [low, high] (None: unbounded); ``parse_params`` names a value outside."""
    return dataclasses.field(default=default, metadata={"range": (low, high)})


def _outside(value, field) -> bool:
    low, high = field.metadata.get("range", (None, None))
    return (low is not None and value < low) or (high is not None and value > high)


def _range_text(field) -> str:
    low, high = field.metadata.get("range", (None, None))
    return f"[{low}, {high}]"


@dataclass(frozen=True)
class TrainParams:
    """What every primitive's training takes; primitives add their own fields."""

    max_epochs: int = bounded(10, 1, None)


@dataclass(frozen=True)
class TuneParams:
    trials: int = 0
    max_epochs: int | None = None  # epochs per trial (default: the training's own)
    space: dict = dataclasses.field(default_factory=dict)


def _suggest_name(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _type_ok(value, annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def parse_params(cls, raw: dict | None, where: str):
    """``cls(**raw)`` with every key checked: unknown keys, wrong types and values outside a field's
    ``metadata["range"]`` (low, high; None: unbounded) are one-line errors naming them."""
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in raw.items():
        if key not in fields:
            known = sorted(fields)
            raise ParamsError(f"{where}: unknown key {key!r} ({_suggest_name(key, known)}known: {', '.join(known)})")
        if not _type_ok(value, hints[key]):
            raise ParamsError(f"{where}.{key}: {value!r} is not of type {getattr(hints[key], '__name__', hints[key])}")
        if _outside(value, fields[key]):
            raise ParamsError(f"{where}.{key}: {value!r} is outside {_range_text(fields[key])}")
    values = {k: (float(v) if hints[k] is float else v) for k, v in raw.items()}
    return cls(**values)


def replace_params(params, updates: dict, where: str):
    """Params with some fields replaced (tuned values), checked like ``parse_params``."""
    return parse_params(type(params), {**dataclasses.asdict(params), **updates}, where)


def pick(params, target) -> dict:
    """The fields of ``params`` that ``target`` (a class or function) takes as keyword arguments."""
    accepted = inspect.signature(target).parameters
    return {k: v for k, v in dataclasses.asdict(params).items() if k in accepted}


_KINDS = ("float", "int", "choices")


def check_space(space: dict, params_cls, where: str) -> None:
    """Every tuned name is a training parameter, every range is well formed and inside the parameter's own."""
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    names = set(fields)
    for name, spec in (space or {}).items():
        if name not in names:
            raise ParamsError(f"{where}.{name}: not a training parameter ({_suggest_name(name, sorted(names))}known: {', '.join(sorted(names))})")
        kinds = [k for k in _KINDS if k in (spec or {})]
        if len(kinds) != 1:
            raise ParamsError(f"{where}.{name}: give exactly one of float: [low, high], int: [low, high], choices: [...]")
        extra = set(spec) - {kinds[0], "log"}
        if extra:
            raise ParamsError(f"{where}.{name}: unknown key {sorted(extra)[0]!r} (known: {kinds[0]}, log)")
        if kinds[0] != "choices" and (len(spec[kinds[0]]) != 2 or spec[kinds[0]][0] > spec[kinds[0]][1]):
            raise ParamsError(f"{where}.{name}: {kinds[0]} needs [low, high] with low <= high")
        drawn = spec[kinds[0]] if kinds[0] != "choices" else [v for v in spec["choices"] if isinstance(v, (int, float))]
        outside = [v for v in drawn if _outside(v, fields[name])]
        if outside:
            raise ParamsError(f"{where}.{name}: {outside[0]!r} is outside the parameter's range {_range_text(fields[name])}")


def configured_point(space: dict, params) -> dict:
    """The values ``params`` holds for the tuned names, those that lie inside the declared space: the point a
    study tries first, so that tuning replaces the configuration only with one its objective scores better."""
    point = {}
    for name, spec in space.items():
        value = getattr(params, name)
        if "choices" in spec:
            inside = value in list(spec["choices"])
        else:
            low, high = spec["int"] if "int" in spec else spec["float"]
            inside = low <= value <= high
        if inside:
            point[name] = value
    return point


def suggest(trial, space: dict) -> dict:
    """One Optuna draw from a declared space, in the space's order (which fixes the sampler's stream)."""
    drawn = {}
    for name, spec in space.items():
        if "choices" in spec:
            drawn[name] = trial.suggest_categorical(name, list(spec["choices"]))
        elif "int" in spec:
            low, high = spec["int"]
            drawn[name] = trial.suggest_int(name, int(low), int(high), log=bool(spec.get("log", False)))
        else:
            low, high = spec["float"]
            drawn[name] = trial.suggest_float(name, float(low), float(high), log=bool(spec.get("log", False)))
    return drawn
