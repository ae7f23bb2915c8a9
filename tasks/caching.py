"""Caching of pipeline steps: what a cached step's key is made of (`cache_key`), where results
live (`result_storage`), and how a run opts out of or refreshes the cache (`cached_steps`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE, CachePolicy, CompoundCachePolicy

from tasks.config import CacheConfig
from tasks.lineage import source_hash
from tasks.paths import project_home
from tasks.storage import storage_options


@dataclass
class PipelineCode(CachePolicy):
    """Keys on the source of the whole pipeline package. Prefect's TASK_SOURCE sees only the
    task function's own lines, so a change to a helper it calls (a transformer, a check) would
    otherwise be served a stale cached result."""

    def compute_key(self, task_ctx, inputs: dict[str, Any] | None, flow_parameters, **kwargs) -> str | None:
        return source_hash()


@dataclass
class NamedInputs(CachePolicy):
    """Keys on the named inputs only. Every other input (a DataFrame, a fitted model) stays out
    of the key, so a parameter added later is never hashed unless it is named here."""

    names: tuple[str, ...] = ()

    def compute_key(self, task_ctx, inputs: dict[str, Any] | None, flow_parameters, **kwargs) -> str | None:
        inputs = inputs or {}
        return INPUTS.compute_key(task_ctx, {name: inputs.get(name) for name in self.names}, flow_parameters,
                                  **kwargs)


def cache_key(*inputs: str) -> CachePolicy:
    """The cache policy of a cached step, saying in one place what its key is made of: the
    task's source, the pipeline's code, and exactly these inputs. Frames are never among them:
    a fingerprint, a config section or a `data_key` (`step_key`) stands for them."""
    if not inputs:
        raise ValueError("name the inputs the cache key is made of")
    return TASK_SOURCE + PipelineCode() + NamedInputs(names=tuple(inputs))


def key_inputs(task) -> tuple[str, ...] | None:
    """The inputs `task`'s cache key is made of, when it declares them with `cache_key`."""
    policy = task.cache_policy
    policies = policy.policies if isinstance(policy, CompoundCachePolicy) else [policy]
    named = [p for p in policies if isinstance(p, NamedInputs)]
    return named[0].names if named else None


def result_storage(location: str):
    """A local folder (relative to the project), an `s3://` prefix (saved as a Prefect
    RemoteFileSystem block; credentials come from the AWS environment, never the block), or
    `block:<type>/<name>` for any saved Prefect storage block."""
    if location.startswith("block:"):
        return location.removeprefix("block:")
    if "://" in location and not location.startswith("file://"):
        from prefect.filesystems import RemoteFileSystem

        name = "mlpipe-cache-" + hashlib.sha256(location.encode()).hexdigest()[:10]
        block = RemoteFileSystem(basepath=location.rstrip("/"), settings=storage_options(location))
        block.save(name, overwrite=True)
        return f"remote-file-system/{name}"
    path = Path(location.removeprefix("file://"))
    path = path if path.is_absolute() else project_home() / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_steps(config: CacheConfig, refresh: bool = False):
    """`cached` for one flow run: `cached(task)` is `task` with its results persisted to the
    configured storage; `refresh` recomputes and overwrites them; a disabled cache turns caching
    off for the run. It refuses a task that declares no `cache_key`, so a flow line that says
    `cached(...)` is a step that really is cached."""
    storage = result_storage(config.storage) if config.enabled else None

    def cached(task):
        if key_inputs(task) is None:
            raise TypeError(f"task {task.name!r} declares no cache key (tasks.caching.cache_key)")
        if storage is None:
            return task.with_options(cache_policy=NO_CACHE, persist_result=False)
        return task.with_options(result_storage=storage, refresh_cache=refresh)

    return cached


def step_key(*parts) -> str:
    """A short stable key from already-hashable parts (fingerprints, config sections)."""
    digest = hashlib.sha256()
    for part in parts:
        dump = part.model_dump_json() if hasattr(part, "model_dump_json") else str(part)
        digest.update(dump.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]
