"""The wheel: one import package ``aiprim`` mapped onto the repository's folders, complete, and usable from outside the checkout."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
ENTRY_POINTS: dict[str, str] = PYPROJECT["project"]["entry-points"]["aiprim.primitives"]


def source_packages() -> dict[str, Path]:
    """Every folder with an ``__init__.py`` under a mapped folder, by the package name it gets."""
    found = {}
    for package, folder in PACKAGE_DIR.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(root).parts
            found[".".join((package, *relative))] = init.parent
    return found


def source_modules() -> dict[str, Path]:
    """Every .py file (and package data) of the listed packages, by its path inside the wheel."""
    files = {}
    data = SETUPTOOLS.get("package-data", {})
    for package, folder in source_packages().items():
        if package not in PACKAGES:
            continue
        prefix = package.replace(".", "/")
        for path in folder.iterdir():
            if path.suffix == ".py" or any(path.match(pattern) for pattern in data.get(package, ())):
                files[f"{prefix}/{path.name}"] = path
    return files


def test_every_source_package_is_listed():
    """A new sub-package (a new primitive) not in ``[tool.setuptools] packages`` would be missing from the wheel."""
    found = source_packages()
    for folder in ("primitives", "flows", "registry"):
        assert any(path.is_relative_to(REPO / folder) for path in found.values()), f"{folder}/ is not mapped"
    missing = sorted(set(found) - set(PACKAGES))
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    absent = sorted(set(PACKAGES) - set(found))
    assert not absent, f"listed in pyproject.toml but no folder with __init__.py: {absent}"


def test_every_primitive_entry_point_is_packaged():
    from aiprim import primitives

    folders = {p.name for p in (REPO / PACKAGE_DIR["aiprim.primitives"]).iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(ENTRY_POINTS), "every primitive sub-package has an [project.entry-points.\"aiprim.primitives\"] entry"
    assert set(ENTRY_POINTS) <= set(primitives.names())
    for name, target in ENTRY_POINTS.items():
        module, _, attribute = target.partition(":")
        assert module in PACKAGES, f"entry point {name} = {target}: {module} is not packaged"
        assert attribute


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (an in-tree build writes build/ and *.egg-info into the checkout,
    and a stale build/lib can leak deleted files into the wheel)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for folder in sorted(set(PACKAGE_DIR.values())):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(root / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"pip wheel failed (setuptools in the venv?):\n{result.stdout}\n{result.stderr}"
    (built,) = (root / "dist").glob("aiprim-*.whl")
    return built


def test_wheel_holds_one_import_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
    assert len(dist_info) == 1
    top_level = {n.split("/")[0] for n in names} - dist_info
    assert top_level == {"aiprim"}, f"only aiprim/ at the top of the wheel, not {sorted(top_level - {'aiprim'})}"

    expected = {"aiprim/__init__.py", "aiprim/settings.py", "aiprim/configs/pipeline.yaml", "aiprim/flows/cli.py",
                "aiprim/flows/config.py", "aiprim/registry/__init__.py", "aiprim/primitives/_base.py"}
    expected |= {f"aiprim/configs/{name}.yaml" for name in ENTRY_POINTS}
    expected |= {f"aiprim/primitives/{name}/{module}" for name in ENTRY_POINTS for module in ("__init__.py", "_runtime.py")}
    assert not sorted(expected - names), f"missing from the wheel: {sorted(expected - names)}"
    # every source file of a listed package, at its mapped path
    assert not sorted(set(source_modules()) - names), f"missing from the wheel: {sorted(set(source_modules()) - names)}"

    (info,) = dist_info
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # keep names as written
    parser.read_string(zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode())
    assert parser["console_scripts"]["aiprim"].strip() == "aiprim.flows.cli:main"
    assert {k: v.strip() for k, v in parser["aiprim.primitives"].items()} == ENTRY_POINTS


INSTALLED_PROBE = textwrap.dedent(
    """
    import json, sys
    import aiprim, aiprim.settings as s
    from aiprim import load_runtime
    import aiprim.flows, aiprim.primitives, aiprim.registry
    from aiprim.flows import config

    cfg = config.load()
    print(aiprim.__file__, s.config_dir())
    print(json.dumps({
        "files": {m: sys.modules[m].__file__ for m in ("aiprim", "aiprim.flows", "aiprim.primitives", "aiprim.registry",
                                                       "aiprim.settings", "aiprim.flows.config")},
        "config_dir": str(s.config_dir()), "source_checkout": str(s.source_checkout()), "home": str(s.home()),
        "tracking_uri": s.tracking_uri(), "primitive_configs": sorted(cfg["primitive_configs"]),
        "primitives": aiprim.primitives.names(),
    }))
    """
)


def test_installed_wheel_runs_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    database = tmp_path / "empty.db"
    database.touch()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "PYTHONPATH": str(site), "MLFLOW_TRACKING_URI": f"sqlite:///{database}"}
    result = subprocess.run([sys.executable, "-c", INSTALLED_PROBE], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(report, indent=1))

    for module, file in report["files"].items():
        assert Path(file).is_relative_to(site), f"{module} imported from {file}, not from the wheel"
    config_dir = Path(report["config_dir"])
    assert config_dir == (site / "aiprim" / "configs").resolve()
    assert (config_dir / "pipeline.yaml").is_file()
    assert report["source_checkout"] == "None", "an installed wheel is no source checkout"
    assert Path(report["home"]) == cwd.resolve(), "without AIPRIM_HOME the project folder is the current directory"
    assert report["tracking_uri"] == f"sqlite:///{database}"
    assert report["primitive_configs"] == sorted(ENTRY_POINTS) == report["primitives"]
