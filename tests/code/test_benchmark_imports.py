"""Every name a benchmark imports from aiprim exists: benchmarks run only by hand, so a renamed function would
otherwise go unnoticed until someone reruns them (benchmarks/compiler.py imported a removed ``evaluate`` for weeks)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py"))


def _aiprim_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from aiprim... import name`` in the file, inside functions too."""
    return [(node.module, alias.name) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aiprim"
            for alias in node.names]


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.name)
def test_what_a_benchmark_imports_from_aiprim_exists(path):
    missing = []
    for module, name in _aiprim_imports(path):
        imported = importlib.import_module(module)
        if not hasattr(imported, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{path.name} imports names aiprim does not have: {', '.join(missing)}"
