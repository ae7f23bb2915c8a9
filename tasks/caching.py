"""Where cached task results live, and how a run opts out of or refreshes the cache."""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE, CachePolicy

from tasks.config import CacheConfig

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def project_home() -> Path:
    """Where embedded state lives: `MLPIPE_HOME`, else the current directory."""
    return Path(os.environ.get("MLPIPE_HOME") or Path.cwd()).resolve()


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """Content hash of the pipeline's own code (tasks/ and flows/)."""
    digest = hashlib.sha256()
    for package in ("tasks", "flows"):
        for path in sorted((PACKAGE_ROOT / package).glob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class PipelineCode(CachePolicy):
    """Keys on the source of the whole pipeline package. Prefect's TASK_SOURCE sees only the
    task function's own lines, so a change to a helper it calls (a transformer, a check) would
    otherwise be served a stale cached result."""

    def compute_key(self, task_ctx, inputs: dict[str, Any] | None, flow_parameters, **kwargs) -> str | None:
        return source_hash()


# Cache key of every cached step: its code, the pipeline's code, and its inputs (callers
# subtract the bulky inputs, such as DataFrames, that a fingerprint already stands for).
STEP_CACHE = TASK_SOURCE + PipelineCode() + INPUTS


def result_storage(location: str):
    """A local folder (relative to the project), an `s3://` prefix (saved as a Prefect
    RemoteFileSystem block; credentials come from the AWS environment, never the block), or
    `block:<type>/<name>` for any saved Prefect storage block."""
    if location.startswith("block:"):
        return location.removeprefix("block:")
    if "://" in location and not location.startswith("file://"):
        from prefect.filesystems import RemoteFileSystem

        from tasks.storage import storage_options

        name = "mlpipe-cache-" + hashlib.sha256(location.encode()).hexdigest()[:10]
        block = RemoteFileSystem(basepath=location.rstrip("/"), settings=storage_options(location))
        block.save(name, overwrite=True)
        return f"remote-file-system/{name}"
    path = Path(location.removeprefix("file://"))
    path = path if path.is_absolute() else project_home() / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached(task, config: CacheConfig, refresh: bool = False):
    """`task` with its results persisted to the configured storage; `refresh` recomputes and
    overwrites the cached value; a disabled cache turns caching off for the run."""
    if not config.enabled:
        return task.with_options(cache_policy=NO_CACHE, persist_result=False)
    return task.with_options(result_storage=result_storage(config.storage), refresh_cache=refresh)


def step_key(*parts) -> str:
    """A short stable key from already-hashable parts (fingerprints, config sections)."""
    digest = hashlib.sha256()
    for part in parts:
        dump = part.model_dump_json() if hasattr(part, "model_dump_json") else str(part)
        digest.update(dump.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]
