"""Caching of pipeline steps: what a cached step's key is made of (`cache_key`), where results
live (`result_storage`), and how a run opts out of or refreshes the cache (`cached_steps`)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
from pandas.arrays import ArrowExtensionArray
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE, CachePolicy, CompoundCachePolicy
from prefect.serializers import Serializer
from pydantic import Field

from mlpipe.core.config import CacheConfig
from mlpipe.core.lineage import source_hash
from mlpipe.core.paths import project_home
from mlpipe.data.reader import storage_options


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


@dataclass
class TrackingStore(CachePolicy):
    """Keys on the MLflow tracking store (MLFLOW_TRACKING_URI, or the project's own): for a step
    whose result names runs in that store (a study's parent run), so that pointing the pipeline
    at another store runs the step again, and that store gets its runs."""

    def compute_key(self, task_ctx, inputs: dict[str, Any] | None, flow_parameters, **kwargs) -> str | None:
        from mlpipe.adapters.mlflow.tracking import tracking_uri

        return tracking_uri()


def cache_key(*inputs: str, tracking_store: bool = False) -> CachePolicy:
    """The cache policy of a cached step, saying in one place what its key is made of: the
    task's source, the pipeline's code, and exactly these inputs (and, with `tracking_store`,
    the MLflow store its result lives in). Frames are never among them: a fingerprint, a config
    section or a `data_key` (`step_key`) stands for them."""
    if not inputs:
        raise ValueError("name the inputs the cache key is made of")
    policy = TASK_SOURCE + PipelineCode() + NamedInputs(names=tuple(inputs))
    return policy + TrackingStore() if tracking_store else policy


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


_COMPACT_MAGIC = b"MLPK1"


def _arrow_array(cls, state: dict):
    """An Arrow-backed pandas array rebuilt from `_ArrowChunksPickler`'s state (its chunks)."""
    array = cls.__new__(cls)
    array.__setstate__(state)  # pandas' own: `pa.chunked_array` of the chunks, as they came
    return array


class _ArrowChunksPickler(cloudpickle.Pickler):
    """cloudpickle, except that an Arrow-backed pandas array (the `str` columns pandas 3 reads)
    is pickled chunk by chunk. pandas' own `__getstate__` first combines the chunks into one
    new array, a copy of every string column (130 MiB for a million-row churn table, on top
    of the table, each time a frame is persisted); the chunks' buffers go out of band as
    they are, and loading gives the same values and dtype."""

    def reducer_override(self, obj):  # called for every object pickled: keep it to one check
        if isinstance(obj, ArrowExtensionArray) and "_pa_array" in obj.__dict__:  # ArrowStringArray too
            return _arrow_array, (type(obj), {**obj.__dict__, "_cache": {}})
        return super().reducer_override(obj)


def _dumps(obj: Any, buffers: list) -> bytes:
    out = io.BytesIO()
    _ArrowChunksPickler(out, protocol=5, buffer_callback=buffers.append).dump(obj)
    return out.getvalue()


class CompactPickle(Serializer):
    """How cached steps' results are persisted: cloudpickle (protocol 5) with the large
    buffers (a frame's columns, a model's arrays) taken out of band and each compressed on
    its own (zstd through pyarrow), then base64 as Prefect's record format needs.

    Prefect's default pickle serializer base64s one contiguous pickle of the whole object, and
    the record around it is then built as a JSON string and encoded: four whole-size copies of
    a million-row frame alive at once (about 1.2 GB at 1M rows). Here the only whole-size
    objects are the compressed ones (a churn frame compresses about 6x). Loading gives the
    same object back; the arrays are rebuilt on the decompressed buffers, without a copy."""

    type: str = Field(default="mlpipe/compact-pickle", frozen=True)
    codec: str = "zstd"
    level: int = 1

    def _codec(self, name: str):
        import pyarrow as pa

        return pa.Codec(name, compression_level=self.level if name == "zstd" else None)

    def dumps(self, obj: Any) -> bytes:
        buffers: list[pickle.PickleBuffer] = []
        head = _dumps(obj, buffers)
        codec = self._codec(self.codec)
        parts, sizes = [], []
        for raw in [memoryview(head), *(buffer.raw() for buffer in buffers)]:
            packed = codec.compress(raw, asbytes=True)
            parts.append(packed)
            sizes.append([raw.nbytes, len(packed)])
        del head, buffers
        header = json.dumps({"codec": self.codec, "sizes": sizes}).encode()
        return base64.b64encode(b"".join([_COMPACT_MAGIC, struct.pack("<I", len(header)), header, *parts]))

    def loads(self, blob: bytes) -> Any:
        data = memoryview(base64.b64decode(blob))
        if bytes(data[:len(_COMPACT_MAGIC)]) != _COMPACT_MAGIC:
            raise ValueError("not a result written by mlpipe.tasks.caching.CompactPickle")
        at = len(_COMPACT_MAGIC)
        (length,) = struct.unpack("<I", data[at:at + 4])
        header = json.loads(bytes(data[at + 4:at + 4 + length]))
        at += 4 + length
        codec = self._codec(header["codec"])
        unpacked = []
        for raw_size, packed_size in header["sizes"]:
            unpacked.append(codec.decompress(data[at:at + packed_size], decompressed_size=raw_size, asbytes=False))
            at += packed_size
        head, *buffers = unpacked
        return pickle.loads(memoryview(head), buffers=buffers)


def cached_steps(config: CacheConfig, refresh: bool = False):
    """`cached` for one flow run: `cached(task)` is `task` with its results persisted to the
    configured storage (as `CompactPickle`); `refresh` recomputes and overwrites them; a disabled cache turns caching
    off for the run. It refuses a task that declares no `cache_key`, so a flow line that says
    `cached(...)` is a step that really is cached."""
    storage = result_storage(config.storage) if config.enabled else None

    def cached(task):
        if key_inputs(task) is None:
            raise TypeError(f"task {task.name!r} declares no cache key (mlpipe.tasks.caching.cache_key)")
        if storage is None:
            return task.with_options(cache_policy=NO_CACHE, persist_result=False)
        return task.with_options(result_storage=storage, result_serializer=CompactPickle(),
                                 refresh_cache=refresh)

    return cached


def step_key(*parts) -> str:
    """A short stable key from already-hashable parts (fingerprints, config sections)."""
    digest = hashlib.sha256()
    for part in parts:
        dump = part.model_dump_json() if hasattr(part, "model_dump_json") else str(part)
        digest.update(dump.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]
