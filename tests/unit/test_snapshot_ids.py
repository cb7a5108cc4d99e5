"""A snapshot's id is its content's, wherever the folder lies: a DVC stage's ``data/dvc/<primitive>/snapshot``
has the id the store would give it, so lineage and ``aiprim status`` name it, not the word "snapshot"."""

from __future__ import annotations

import shutil

from aiprim.primitives._snapshot import snapshot_id
from aiprim.registry._lineage import snapshot_tags
from tests.conftest import write_balancer_snapshot


def test_a_snapshot_outside_the_store_keeps_its_content_id(tmp_path, balancer_tables):
    stored = write_balancer_snapshot(tmp_path / "store", balancer_tables)
    assert snapshot_id(stored) == stored.name
    moved = tmp_path / "dvc" / "balancer" / "snapshot"
    shutil.copytree(stored, moved)
    assert snapshot_id(moved) == stored.name
    assert snapshot_tags(moved)["aiprim.snapshot_id"] == stored.name


def test_other_tables_give_another_id(tmp_path, balancer_tables):
    stored = write_balancer_snapshot(tmp_path / "store", balancer_tables)
    fewer = {**balancer_tables, "requests": balancer_tables["requests"].iloc[:-1]}
    other = write_balancer_snapshot(tmp_path / "other", fewer)
    shutil.copytree(other, tmp_path / "snapshot")
    assert snapshot_id(tmp_path / "snapshot") == other.name != stored.name
