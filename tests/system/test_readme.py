"""The README's first command, as a new user runs it: `make run` in a clean clone (its venv
reusing the packages this suite runs on: see `reuse_installed_packages`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def reuse_installed_packages(clone: Path) -> None:
    """The clone's .venv, made as `make` makes it, also sees the packages this suite runs on, so
    `make run`'s install step (the Makefile's, unchanged) finds its requirements met and installs
    the project alone. A fresh install of every package is what `make test` itself does first on
    CI's clean clone, and the rest of the suite runs on it: done here again, it cost ~100 s more."""
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(clone / ".venv")],
                   check=True, timeout=120)
    clone_site = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c",
                                 "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                check=True, capture_output=True, text=True).stdout.strip()
    # a plain path line: its packages are importable, its own .pth files (this checkout's
    # editable install of the project among them) are not run
    Path(clone_site, "_suite_packages.pth").write_text(sysconfig.get_path("purelib") + "\n")


@pytest.mark.slow
def test_make_run_from_a_clean_clone(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLPIPE_HOME", "VIRTUAL_ENV")
           and not k.startswith(("PYTEST", "MAKE"))}

    reuse_installed_packages(clone)

    first = subprocess.run(["make", "run"], cwd=clone, env=env, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    tail = first.stdout.strip().splitlines()
    assert tail[-1].startswith("time"), tail[-8:]
    assert any(line.startswith("decision   champion") for line in tail), tail[-8:]
    assert (clone / ".mlpipe" / "mlflow.db").exists()
    ran = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c",
                          "import mlpipe.flows, mlpipe.tasks; print(mlpipe.flows.__file__, mlpipe.tasks.__file__)"],
                         cwd="/", env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(path).is_relative_to(clone) for path in ran), ran  # the clone's code, installed by its make

    second = subprocess.run(["make", "run"], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "identical rerun" in second.stdout
    assert second.stderr.count("Cached") >= 5
    assert "Traceback" not in second.stdout + second.stderr
