"""Kernel families, their schedule spaces and loop nests.

A family is described once, as data: its dimensions, the knobs of its
schedule space with their allowed values, and its loop nest (loops with
extents and tile knobs, buffers with the stride each loop gives them). The C
code generator, the feature extractor and the validation rules all read this
one description, so a knob added here is generated, featurised and checked
without another edit.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field

import numpy as np


class TaskError(ValueError):
    """A task or schedule that does not fit its family; the message names the task."""


@dataclass(frozen=True)
class Loop:
    name: str
    extent: str  # an expression over the shape's dimensions, evaluated by ``extent_of``
    tile_knob: str | None = None  # knob holding the tile size; None: the loop is not tiled
    reduction: bool = False


@dataclass(frozen=True)
class Buffer:
    name: str
    strides: dict  # loop name -> expression of the element stride that loop gives this buffer
    elements: str  # expression of the buffer's size in elements
    output: bool = False
    # Extra elements a tile touches along a loop because another loop slides with it (conv's p+r).
    halo: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    name: str
    dims: tuple[str, ...]
    knobs: dict  # knob -> tuple of allowed values
    loops: tuple[Loop, ...]
    buffers: tuple[Buffer, ...]
    flops: str  # expression: floating-point operations of one run
    parallel_loops: tuple[str, ...]  # tile loops shared out among threads (collapsed)
    target: str = "cpu"
    # The computation, where families of several targets compute the same thing (placement: _placement.py).
    computes: str | None = None

    @property
    def computation(self) -> str:
        return self.computes or self.name

    @property
    def orders(self) -> tuple[str, ...]:
        return self.knobs["order"]

    def env(self, shape: dict) -> dict:
        env = {d: int(shape[d]) for d in self.dims}
        env.update(derived_dims(self.name, env))
        return env


def derived_dims(family: str, env: dict) -> dict:
    if family == "conv2d":
        return {"P": env["H"] - env["R"] + 1, "Q": env["W"] - env["S"] + 1}
    if family == "stencil2d":
        return {"HI": env["H"] - 2, "WI": env["W"] - 2}
    return {}


def extent_of(expression: str, env: dict) -> int:
    return int(eval(expression, {"__builtins__": {}}, env))  # expressions are ours, never the user's


POW2_TILES = (1, 4, 8, 16, 32, 64, 128)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "matmul",
            dims=("M", "N", "K"),
            knobs={
                "tile_m": (1, 4, 8, 16, 32, 64),
                "tile_n": (1, 8, 16, 32, 64, 128, 256),
                "tile_k": (1, 8, 16, 32, 64, 128, 256),
                "order": tuple("".join(p) for p in itertools.permutations("ijk")),
                "unroll": (1, 2, 4, 8),
                "vectorize": (0, 1),
                "threads": (1, 2),
            },
            loops=(Loop("i", "M", "tile_m"), Loop("j", "N", "tile_n"), Loop("k", "K", "tile_k", reduction=True)),
            buffers=(
                Buffer("A", {"i": "K", "k": "1"}, "M*K"),
                Buffer("B", {"k": "N", "j": "1"}, "K*N"),
                Buffer("C", {"i": "N", "j": "1"}, "M*N", output=True),
            ),
            flops="2*M*N*K",
            parallel_loops=("i", "j"),
        ),
        Family(
            "conv2d",  # direct convolution, NCHW, stride 1, no padding: out is N x K x (H-R+1) x (W-S+1)
            dims=("N", "C", "H", "W", "K", "R", "S"),
            knobs={
                "tile_k": (1, 4, 8, 16, 32),
                "tile_p": (1, 2, 4, 8, 16),
                "tile_q": (1, 4, 8, 16, 32, 64),
                "order": ("kcrspq", "kpqcrs", "ckrspq", "kcpqrs", "pqkcrs", "kpcrsq"),
                "unroll": (1, 2, 4, 8),
                "vectorize": (0, 1),
                "threads": (1, 2),
            },
            loops=(
                Loop("k", "K", "tile_k"), Loop("p", "P", "tile_p"), Loop("q", "Q", "tile_q"),
                Loop("c", "C", reduction=True), Loop("r", "R", reduction=True), Loop("s", "S", reduction=True),
            ),
            buffers=(
                Buffer("I", {"c": "H*W", "p": "W", "r": "W", "q": "1", "s": "1"}, "N*C*H*W", halo={"p": "R-1", "q": "S-1"}),
                Buffer("F", {"k": "C*R*S", "c": "R*S", "r": "S", "s": "1"}, "K*C*R*S"),
                Buffer("O", {"k": "P*Q", "p": "Q", "q": "1"}, "N*K*P*Q", output=True),
            ),
            flops="2*N*K*P*Q*C*R*S",
            parallel_loops=("k", "p"),
        ),
        Family(
            "stencil2d",  # one Jacobi sweep of the 5-point Laplacian over the interior of an H x W grid
            dims=("H", "W"),
            knobs={
                "tile_h": (1, 4, 16, 64, 256),
                "tile_w": (1, 16, 64, 256, 1024),
                "order": ("ij", "ji"),
                "unroll": (1, 2, 4, 8),
                "vectorize": (0, 1),
                "threads": (1, 2),
            },
            loops=(Loop("i", "HI", "tile_h"), Loop("j", "WI", "tile_w")),
            buffers=(
                Buffer("X", {"i": "W", "j": "1"}, "H*W", halo={"i": "2", "j": "2"}),
                Buffer("Y", {"i": "W", "j": "1"}, "H*W", output=True),
            ),
            flops="6*(H-2)*(W-2)",
            parallel_loops=("i",),
        ),
        Family(
            "triton_matmul",  # C = A @ B in fp16 with fp32 accumulation, one Triton program per output tile
            dims=("M", "N", "K"),
            knobs={
                "block_m": (16, 32, 64, 128, 256),
                "block_n": (16, 32, 64, 128, 256),
                "block_k": (16, 32, 64, 128),
                "num_warps": (2, 4, 8),
                "num_stages": (1, 2, 3, 4, 5),
                "group_m": (1, 4, 8),
            },
            loops=(Loop("i", "M", "block_m"), Loop("j", "N", "block_n"), Loop("k", "K", "block_k", reduction=True)),
            buffers=(
                Buffer("A", {"i": "K", "k": "1"}, "M*K"),
                Buffer("B", {"k": "N", "j": "1"}, "K*N"),
                Buffer("C", {"i": "N", "j": "1"}, "M*N", output=True),
            ),
            flops="2*M*N*K",
            parallel_loops=("i", "j"),
            target="cuda",
            computes="matmul",  # in fp16 with fp32 accumulation, where the CPU family computes in fp32
        ),
    )
}

CPU_FAMILIES = tuple(name for name, f in FAMILIES.items() if f.target == "cpu")
TARGETS = tuple(dict.fromkeys(f.target for f in FAMILIES.values()))


def task_label(task_id: str | None) -> str:
    """How an error names the task: a row of a tasks table by its id, a command-line option by itself, a task
    given without an id (the runtime's API) as "task"."""
    if task_id is None:
        return "task"
    return task_id if str(task_id).startswith("--") else f"task {task_id}"


def plural(word: str, items: list) -> str:
    return f"{word}{'s' if len(items) > 1 else ''} {', '.join(items)}"


def family_of(kernel: str, task_id: str = "?") -> Family:
    try:
        return FAMILIES[kernel]
    except KeyError:
        raise TaskError(f"{task_label(task_id)}: unknown kernel family {kernel!r} (known: {', '.join(FAMILIES)})") from None


def _json_object(value, what: str, task_id: str, expected: str) -> dict:
    """``value`` decoded when it is JSON text; TaskError naming the task unless it is an object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise TaskError(f"{task_label(task_id)}: {what} is not JSON: {value[:80]!r}") from None
    if not isinstance(value, dict):
        raise TaskError(f"{task_label(task_id)}: {expected}")
    return value


def parse_shape(kernel: str, shape, task_id: str = "?") -> dict:
    """The shape as ``{dim: positive int}``; raises TaskError naming the task otherwise."""
    family = family_of(kernel, task_id)
    shape = _json_object(shape, "shape", task_id, f"shape must be a JSON object of {', '.join(family.dims)}")
    missing = [d for d in family.dims if d not in shape]
    if missing:
        raise TaskError(f"{task_label(task_id)}: {kernel} shape misses {plural('dimension', missing)}")
    unknown = sorted(set(shape) - set(family.dims))
    if unknown:
        raise TaskError(f"{task_label(task_id)}: {kernel} has no {plural('dimension', unknown)} (dimensions: {', '.join(family.dims)})")
    parsed = {}
    for d in family.dims:
        value = shape[d]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value <= 0:
            raise TaskError(f"{task_label(task_id)}: dimension {d}={value!r} must be a positive integer")
        parsed[d] = int(value)
    for name, value in derived_dims(kernel, parsed).items():
        if value <= 0:
            raise TaskError(f"{task_label(task_id)}: {kernel} shape {parsed} leaves no output ({name}={value})")
    return parsed


def parse_schedule(kernel: str, schedule, task_id: str = "?") -> dict:
    """The schedule as ``{knob: value}`` with every knob of the family set to an allowed value."""
    family = family_of(kernel, task_id)
    schedule = _json_object(schedule, "schedule", task_id, "a schedule must be a JSON object of knobs")
    unknown = sorted(set(schedule) - set(family.knobs))
    if unknown:
        raise TaskError(f"{task_label(task_id)}: unknown {plural('knob', unknown)} for {kernel} (knobs: {', '.join(family.knobs)})")
    missing = [k for k in family.knobs if k not in schedule]
    if missing:
        raise TaskError(f"{task_label(task_id)}: schedule misses {plural('knob', missing)}")
    for knob, allowed in family.knobs.items():
        if schedule[knob] not in allowed or isinstance(schedule[knob], bool):
            raise TaskError(f"{task_label(task_id)}: knob {knob}={schedule[knob]!r} is not one of {list(allowed)}")
    return {k: schedule[k] for k in family.knobs}


def schedule_json(schedule: dict) -> str:
    return json.dumps(schedule, sort_keys=True, separators=(",", ":"))


def space_size(kernel: str) -> int:
    return math.prod(len(v) for v in FAMILIES[kernel].knobs.values())


def sample_schedules(kernel: str, count: int, rng: np.random.Generator, exclude: set[str] | None = None) -> list[dict]:
    """``count`` distinct schedules drawn uniformly from the family's space (all of it when smaller)."""
    family = FAMILIES[kernel]
    names = list(family.knobs)
    sizes = [len(family.knobs[n]) for n in names]
    total = math.prod(sizes)
    exclude = set(exclude or ())
    count = min(count, total - len(exclude))
    picked: dict[str, dict] = {}
    if count * 4 >= total:  # small space: enumerate and shuffle rather than rejection-sample
        indices = rng.permutation(total)
    else:
        indices = rng.integers(0, total, size=count * 4 + 64)
    for flat in indices:
        if len(picked) >= count:
            break
        digits, rest = [], int(flat)
        for size in sizes:
            rest, digit = divmod(rest, size)
            digits.append(digit)
        schedule = {n: _plain(family.knobs[n][d]) for n, d in zip(names, digits)}
        key = schedule_json(schedule)
        if key not in picked and key not in exclude:
            picked[key] = schedule
    if len(picked) < count:  # rejection sampling ran dry on a crowded space: top up by enumeration
        return list(picked.values()) + sample_schedules(kernel, count - len(picked), rng, exclude | set(picked))
    return list(picked.values())


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value
