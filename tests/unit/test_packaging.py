"""Installing the project adds one top-level name, `mlpipe`: the library and, under it, the
Prefect tasks, flows and deployment code (their folders keep their place in the checkout)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """`pip wheel --no-deps .` on a copy of the project's sources (setuptools builds in the
    source tree: a build/ folder beside the checkout's code would be read as code)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for folder in ("mlpipe", "tasks", "flows", "deployments"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=300)
    return zipfile.ZipFile(next(out.glob("mlpipe-*.whl")))


@pytest.mark.slow  # over 10 s
def test_the_wheel_holds_one_top_level_package(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"mlpipe"}


def test_the_wheel_holds_every_module_of_the_checkout(wheel):
    names = set(wheel.namelist())
    expected = {f"mlpipe/{p.relative_to(ROOT / 'mlpipe').as_posix()}" for p in (ROOT / "mlpipe").rglob("*.py")}
    for folder in ("tasks", "flows", "deployments"):
        expected |= {f"mlpipe/{folder}/{p.name}" for p in (ROOT / folder).glob("*.py")}
    assert expected <= names, sorted(expected - names)
    entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "mlpipe = mlpipe.cli.main:run" in entry_points
