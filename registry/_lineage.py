"""Lineage tags: what produced a run, so any model can be traced and reproduced."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ..settings import source_checkout
from .._hashing import config_hash
from ..primitives._snapshot import snapshot_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source_checkout() or ".", capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source_checkout() or ".", capture_output=True, text=True, timeout=10)
        return commit + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def snapshot_tags(snapshot_dir: Path) -> dict[str, str]:
    manifest = json.loads((Path(snapshot_dir) / "manifest.json").read_text())
    tables = manifest.get("tables", {})
    return {
        "aiprim.snapshot_id": snapshot_id(snapshot_dir),
        "aiprim.snapshot_hash": config_hash({k: v.get("sha256") for k, v in tables.items()}),
        "aiprim.snapshot_source": str(manifest.get("source", ""))[:250],
        "aiprim.deployment": str(manifest.get("deployment") or "default"),
    }


def lineage_tags(primitive: str, snapshot_dir: Path, params: dict, step: str) -> dict[str, str]:
    return {
        "aiprim.primitive": primitive,
        "aiprim.step": step,
        "aiprim.git_commit": git_commit(),
        "aiprim.config_hash": config_hash(params),
        **snapshot_tags(snapshot_dir),
    }
