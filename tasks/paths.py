"""Where the pipeline's own code and its embedded state live (kernel: no Prefect, no MLflow)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the folder holding tasks/ and flows/


def project_home() -> Path:
    """Where embedded state lives: `MLPIPE_HOME`, else the current directory."""
    return Path(os.environ.get("MLPIPE_HOME") or Path.cwd()).resolve()
