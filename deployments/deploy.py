"""Creating the deployments of prefect.yaml on a Prefect server: the process work pool the
worker takes runs from (created when missing), then `prefect deploy --all` from the project
folder. `mlpipe deploy` and `make deploy` call `deploy_all`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


class DeployError(RuntimeError):
    """The work pool or the deployments could not be created; the message says which."""


def _prefect() -> str:
    """The `prefect` command of this environment (beside the running interpreter)."""
    return str(Path(sys.executable).with_name("prefect"))


def ensure_work_pool(pool: str) -> bool:
    """Create the process work pool `pool` unless it exists; True when it was created."""
    prefect = _prefect()
    if subprocess.run([prefect, "work-pool", "inspect", pool], capture_output=True).returncode == 0:
        return False
    created = subprocess.run([prefect, "work-pool", "create", pool, "--type", "process"], capture_output=True,
                             text=True)
    if created.returncode != 0:
        raise DeployError(f"could not create work pool {pool}: {created.stderr.strip()[-500:]}")
    return True


def deploy_all(pool: str, project_root: Path, say: Callable[[str], None] = print) -> None:
    """The work pool, then every deployment in `project_root`/prefect.yaml."""
    if ensure_work_pool(pool):
        say(f"created work pool {pool}")
    if subprocess.run([_prefect(), "--no-prompt", "deploy", "--all"], cwd=project_root).returncode != 0:
        raise DeployError("prefect deploy --all failed (see above)")
