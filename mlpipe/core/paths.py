"""Where the pipeline's own code and its embedded state live (kernel: no Prefect, no MLflow)."""

from __future__ import annotations

import os
from pathlib import Path

LIBRARY_ROOT = Path(__file__).resolve().parent.parent  # mlpipe/: the library (and, installed from a wheel, all of it)
PACKAGE_ROOT = LIBRARY_ROOT.parent  # a checkout: mlpipe/, tasks/, flows/, prefect.yaml


def code_folders(root: Path = PACKAGE_ROOT) -> list[str]:
    """The folders under `root` that hold the pipeline's code: mlpipe/, and tasks/ and flows/
    where they stand beside it (a checkout, or an editable install, which maps them to
    `mlpipe.tasks` and `mlpipe.flows`). Installed from a wheel they live inside mlpipe/."""
    folders = [name for name in ("mlpipe", "tasks", "flows")
               if (root / name).is_dir() and not (root / "mlpipe" / name).is_dir()]
    return folders


def project_home() -> Path:
    """Where embedded state lives: `MLPIPE_HOME`, else the current directory."""
    return Path(os.environ.get("MLPIPE_HOME") or Path.cwd()).resolve()
