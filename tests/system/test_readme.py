"""The README's first command, as a new user runs it: `make run` in a clean clone."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_make_run_from_a_clean_clone(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLPIPE_HOME", "VIRTUAL_ENV")
           and not k.startswith(("PYTEST", "MAKE"))}

    first = subprocess.run(["make", "run"], cwd=clone, env=env, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    tail = first.stdout.strip().splitlines()
    assert tail[-1].startswith("time"), tail[-8:]
    assert any(line.startswith("decision   champion") for line in tail), tail[-8:]
    assert (clone / ".mlpipe" / "mlflow.db").exists()

    second = subprocess.run(["make", "run"], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "identical rerun" in second.stdout
    assert second.stderr.count("Cached") >= 5
    assert "Traceback" not in second.stdout + second.stderr
