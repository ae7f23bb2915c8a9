"""The MLflow adapter and the kernel modules import without Prefect: each is imported in a fresh
interpreter where any import of `prefect` fails, as on a machine without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BLOCK_PREFECT = """import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'prefect':
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, Block())
"""

ADAPTER = sorted(f"tasks.mlflow_adapter.{p.stem}" for p in (ROOT / "tasks" / "mlflow_adapter").glob("*.py")
                 if p.stem != "__init__")
KERNEL = ["tasks.errors", "tasks.conform", "tasks.families", "tasks.metrics", "tasks.lineage", "tasks.paths",
          "tasks.retry_policies"]


def import_blocking_prefect(module: str) -> subprocess.CompletedProcess:
    code = BLOCK_PREFECT + f"import importlib; importlib.import_module({module!r})\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_the_adapter_is_split_into_the_expected_modules():
    assert ADAPTER == [f"tasks.mlflow_adapter.{m}" for m in ("aliases", "models", "studies", "tracking", "versions")]


@pytest.mark.parametrize("module", ["tasks.mlflow_adapter", *ADAPTER, *KERNEL])
def test_imports_without_prefect(module):
    out = import_blocking_prefect(module)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_block_works():
    out = import_blocking_prefect("tasks.caching")  # a stage-side module: it needs Prefect
    assert out.returncode != 0 and "prefect is blocked" in out.stderr
