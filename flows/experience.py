"""Experience: what a primitive trains on is a window of its accepted snapshots, not the newest alone.

Every snapshot that passes validation is appended to the primitive's
history (``<paths.accepted>/<primitive>.json``). Tuning, training and the
peers that learn read the *training part* of every snapshot in the window:
the newest snapshot and the accepted ones before it that describe the same
deployment (equal manifest values of the primitive's ``manifest_keys``,
e.g. the same database, the same machine), at most ``experience.rounds`` of
them, none older than ``experience.max_age_days``, and no more than
``experience.max_rows`` rows of training data. Each snapshot is split on its
own, so a held-out part (and a held-out template or shape) never leaks into
training through an older round. The evaluation still scores the newest
snapshot's held-out part.

The round number (how many snapshots the primitive had accepted before)
varies the generator's seed, so each round draws new work.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from aiprim._locks import exclusive
from aiprim.primitives._snapshot import read_manifest, read_tables, snapshot_id

from . import config as cfgmod


@dataclass(frozen=True)
class Window:
    snapshots: tuple[str, ...]   # oldest first; the last is the newest (the one being trained for)
    rows: int

    @property
    def ids(self) -> list[str]:
        return [snapshot_id(s) for s in self.snapshots]


def history_file(name: str, cfg: dict) -> Path:
    return cfgmod.path(cfg, "accepted") / f"{name}.json"


def history(name: str, cfg: dict) -> list[dict]:
    """The accepted snapshots of ``name``, oldest first: ``{"snapshot", "accepted_at"}`` each."""
    path = history_file(name, cfg)
    if not path.exists():
        return []
    record = json.loads(path.read_text())
    entries = record.get("history")
    if entries is None and record.get("snapshot"):  # a record written before histories existed
        entries = [{"snapshot": record["snapshot"], "accepted_at": None}]
    return list(entries or [])


def was_accepted(name: str, snapshot_dir: Path, cfg: dict) -> bool:
    """Whether validation accepted this snapshot folder with this content (its id)."""
    where, content = Path(snapshot_dir).resolve(), _content(snapshot_dir)
    return any(Path(e["snapshot"]).resolve() == where and e.get("id", content) == content for e in history(name, cfg))


def record_accepted(name: str, snapshot_dir: Path, stats: dict, cfg: dict) -> None:
    """Append the snapshot to the history (once) and make it the drift reference of its deployment.

    Rounds run at once (a Dask or Ray runner, or several `aiprim run`s) append under one lock, and the file is
    replaced whole, so a round reading it meanwhile sees the history before or after, never half of it."""
    deployment = _deployment(snapshot_dir)
    path = history_file(name, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path.with_name(f".{path.name}.lock")):
        entries = [e for e in history(name, cfg) if e["snapshot"] != str(snapshot_dir)]
        entries.append({"snapshot": str(snapshot_dir), "accepted_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "deployment": deployment, "id": _content(snapshot_dir)})
        previous = json.loads(path.read_text()) if path.exists() else {}
        by_deployment = {**previous.get("stats_by_deployment", {}), deployment: stats}
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        staging.write_text(json.dumps({"snapshot": str(snapshot_dir), "stats": stats, "stats_by_deployment": by_deployment,
                                       "history": entries[-200:]}, indent=2))
        os.replace(staging, path)


def drift_reference(name: str, snapshot_dir: Path, cfg: dict) -> dict | None:
    """The workload shape of the last accepted snapshot of the same deployment, or None (first of its deployment,
    or the snapshot itself): deployments differ by design, so one is never drift against another."""
    path = history_file(name, cfg)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if record.get("snapshot") == str(snapshot_dir):
        return None
    deployment = _deployment(snapshot_dir)
    if "stats_by_deployment" in record:
        return record["stats_by_deployment"].get(deployment)
    # A record written before deployments existed: its snapshot was the default deployment's.
    return record.get("stats") if deployment == "default" else None


def round_number(name: str, cfg: dict, deployment: str = "default") -> int:
    """How many snapshots of the deployment ``name`` has accepted: the next snapshot is that round."""
    return sum(1 for e in history(name, cfg) if e.get("deployment", "default") == deployment)


def _content(snapshot_dir: Path) -> str | None:
    try:
        return snapshot_id(Path(snapshot_dir))
    except Exception:  # noqa: BLE001  (an unreadable manifest fails validation elsewhere, with its own message)
        return None


def _deployment(snapshot_dir: Path) -> str:
    try:
        return read_manifest(Path(snapshot_dir)).get("deployment") or "default"
    except Exception:  # noqa: BLE001  (an unreadable manifest fails validation elsewhere, with its own message)
        return "default"


def settings(cfg: dict) -> dict:
    section = cfg.get("experience") or {}
    return {"rounds": int(section.get("rounds", 1)), "max_rows": section.get("max_rows"),
            "max_age_days": section.get("max_age_days")}


def window(prim, snapshot_dir: Path, cfg: dict) -> Window:
    """The snapshots to train on for ``snapshot_dir``, oldest first, ending with it."""
    snapshot_dir = Path(snapshot_dir)
    limits = settings(cfg)
    manifest = read_manifest(snapshot_dir)
    same = {k: manifest.get(k) for k in prim.manifest_keys}
    same["deployment"] = manifest.get("deployment", "default")
    oldest = None
    if limits["max_age_days"] is not None:
        oldest = datetime.now(timezone.utc) - timedelta(days=float(limits["max_age_days"]))
    chosen, contents = [str(snapshot_dir)], {_content(snapshot_dir)}
    entries = history(prim.name, cfg)
    position = next((i for i, e in enumerate(entries) if e["snapshot"] == str(snapshot_dir)), len(entries))
    for entry in reversed(entries[:position]):  # only what was accepted before this snapshot
        if len(chosen) >= max(1, limits["rounds"]):
            break
        path = Path(entry["snapshot"])
        if path == snapshot_dir or str(path) in chosen or not (path / "manifest.json").exists():
            continue
        content = _content(path)
        if entry.get("id") and content != entry["id"]:
            # A folder refilled since it was accepted (a DVC stage's `snapshot`): what it holds now was not
            # accepted there, and may have failed validation.
            continue
        if content in contents:  # the same tables accepted at two paths (the store's and a stage's) count once
            continue
        if oldest is not None and entry.get("accepted_at") and _parse(entry["accepted_at"]) < oldest:
            continue
        other = read_manifest(path)
        if {k: other.get(k) for k in prim.manifest_keys} | {"deployment": other.get("deployment", "default")} != same:
            continue
        chosen.append(str(path))
        contents.add(content)
    chosen.reverse()
    rows = [_rows(Path(p)) for p in chosen]
    if limits["max_rows"] is not None:
        while len(chosen) > 1 and sum(rows) > int(limits["max_rows"]):
            chosen.pop(0)
            rows.pop(0)
    return Window(tuple(chosen), int(sum(rows)))


def training_tables(prim, snapshot_dir: Path, cfg: dict) -> tuple[dict, dict, Window]:
    """(training tables merged over the window, the newest snapshot's held-out tables, the window)."""
    from aiprim.primitives._base import Primitive

    fraction = float(cfg["promotion"]["holdout_fraction"])
    win = window(prim, snapshot_dir, cfg)
    if prim.holdout.key is None and type(prim).merge_experience is Primitive.merge_experience:
        # One time-ordered trace per snapshot, which the default merge does not join: the newest alone.
        win = Window(win.snapshots[-1:], _rows(Path(win.snapshots[-1])))
    parts, held_out = [], None
    for path in win.snapshots:
        train, held = prim.split(read_tables(path, prim.schema), fraction)
        parts.append((snapshot_id(path), train))
        held_out = held
    return prim.merge_experience(parts), held_out, win


def _rows(path: Path) -> int:
    tables = read_manifest(path).get("tables", {})
    return max((t.get("rows", 0) for t in tables.values()), default=0)


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
