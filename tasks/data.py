"""Loading datasets from any fsspec URI, and fingerprinting them cheaply.

The fingerprint is what caching and lineage key on: a content hash for local files, the ETag
(and version id, when the bucket is versioned) for S3 objects, so unchanged data is recognised
without reading it twice and changed data never hits a stale cache.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from typing import Any

import fsspec
import pandas as pd
from prefect import task
from prefect.tasks import exponential_backoff

from tasks.caching import STEP_CACHE
from tasks.config import DataConfig
from tasks.errors import DataValidationError

_CHUNK = 1 << 20


class DatasetError(ValueError):
    """The dataset cannot be read as a table (missing, unreadable, wrong format)."""


@dataclass(frozen=True)
class DatasetFingerprint:
    """Identity of one version of a dataset."""

    uri: str
    value: str  # "sha256:<hex>" or "etag:<etag>[:<version>]"
    size: int

    def __str__(self) -> str:
        return self.value


def storage_options(uri: str) -> dict[str, Any]:
    """fsspec options for a URI. S3 credentials come from the standard AWS environment;
    `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` point s3fs at an S3-compatible server."""
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}


def _filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(uri, **storage_options(uri))


def dataset_format(uri: str, configured: str = "auto") -> str:
    """'csv' or 'parquet', from the config or else the file extension."""
    if configured != "auto":
        return configured
    name = uri.lower().split("?")[0]
    for suffix in (".gz", ".bz2", ".zst", ".xz", ".zip"):
        name = name.removesuffix(suffix)
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".txt")):
        return "csv"
    raise DatasetError(f"cannot tell the format of {uri}: set data.format to csv or parquet")


def fingerprint_dataset(uri: str) -> DatasetFingerprint:
    """Fingerprint the object at `uri`: ETag for S3, else a SHA-256 of its bytes."""
    fs, path = _filesystem(uri)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise DatasetError(f"dataset {uri} does not exist") from None
    except PermissionError:
        raise DatasetError(f"no permission to read {uri}: check the credentials (AWS_* environment, "
                           "AWS_PROFILE) and the bucket policy") from None
    if info.get("type") == "directory":
        raise DatasetError(f"dataset {uri} is a folder; point data.uri at a CSV or Parquet file")
    size = int(info.get("size") or 0)
    etag = info.get("ETag") or info.get("etag")
    if etag:
        version = info.get("VersionId") or ""
        return DatasetFingerprint(uri, f"etag:{etag.strip(chr(34))}{':' + version if version else ''}", size)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return DatasetFingerprint(uri, f"sha256:{digest.hexdigest()}", size)


def read_dataset(uri: str, fmt: str = "auto") -> pd.DataFrame:
    """Read a CSV or Parquet file into a DataFrame, keeping duplicate column names as they are
    (pandas would silently rename them to `x.1`, hiding a broken extract from validation)."""
    fmt = dataset_format(uri, fmt)
    fs, path = _filesystem(uri)
    try:
        with fs.open(path, "rb", compression="infer") as handle:
            payload = handle.read()
    except FileNotFoundError:
        raise DatasetError(f"dataset {uri} does not exist") from None
    except PermissionError:
        raise DatasetError(f"no permission to read {uri}: check the credentials (AWS_* environment, "
                           "AWS_PROFILE) and the bucket policy") from None
    if fmt == "parquet":
        try:
            return pd.read_parquet(io.BytesIO(payload))
        except Exception as error:  # pyarrow raises several types for corrupt files
            raise DatasetError(f"{uri} is not a readable Parquet file: {error}") from None
    return _read_csv(uri, payload)


def _read_csv(uri: str, payload: bytes) -> pd.DataFrame:
    try:
        text = payload.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"{uri} is not UTF-8 (byte {error.start}); re-export it as UTF-8"
        ) from None
    first_line = text.split("\n", 1)[0].rstrip("\r")
    if not first_line.strip():
        return pd.DataFrame()
    header = next(csv.reader([first_line]))
    try:
        frame = pd.read_csv(io.StringIO(text), header=None, skiprows=1, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=header)
    except pd.errors.ParserError as error:
        raise DatasetError(f"{uri} is not a well-formed CSV file: {error}") from None
    if frame.shape[1] != len(header):
        raise DatasetError(
            f"{uri}: the header has {len(header)} columns but rows have {frame.shape[1]}; "
            "check the delimiter and quoting"
        )
    frame.columns = [name.strip() for name in header]
    return frame


# -- Prefect tasks ---------------------------------------------------------------------------

def is_transient_io_error(task, task_run, state) -> bool:
    """Retry only faults that may pass (network, throttling, timeouts), never a missing file,
    a format error or bad data."""
    try:
        state.result()
    except (DatasetError, FileNotFoundError, PermissionError, ValueError, TypeError):
        return False
    except (ConnectionError, TimeoutError, OSError):
        return True
    except Exception as error:  # botocore/aiobotocore errors carry no common base we can import cheaply
        return type(error).__module__.startswith(("botocore", "aiobotocore", "aiohttp"))
    return False


IO_RETRIES = dict(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=is_transient_io_error,
)


@task(name="fingerprint", **IO_RETRIES)
def fingerprint_task(data: DataConfig) -> DatasetFingerprint:
    """Fingerprint the configured dataset (cheap: S3 ETag or a local content hash)."""
    return fingerprint_dataset(data.uri)


@task(
    name="load",
    cache_policy=STEP_CACHE,
    persist_result=True,
    cache_result_in_memory=False,
    **IO_RETRIES,
)
def load_task(fingerprint: DatasetFingerprint, fmt: str) -> pd.DataFrame:
    """Read the dataset whose fingerprint was just taken; cached on (fingerprint, format)."""
    return read_dataset(fingerprint.uri, fmt)


def split_dataset(frame: pd.DataFrame, target: str, holdout_fraction: float = 0.2, seed: int = 42,
                  stratify: bool = True, time_column: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded train/holdout split: stratified on the target, or the latest rows by `time_column`."""
    from sklearn.model_selection import train_test_split

    if time_column:
        if time_column not in frame.columns:
            raise DataValidationError(f"split.time_column {time_column!r} is not a column of the dataset",
                                      time_column)
        ordered = frame.sort_values(time_column, kind="stable")
        cut = int(round(len(ordered) * (1 - holdout_fraction)))
        return ordered.iloc[:cut].copy(), ordered.iloc[cut:].copy()
    labels = frame[target] if stratify else None
    train, holdout = train_test_split(frame, test_size=holdout_fraction, random_state=seed, stratify=labels)
    return train.copy(), holdout.copy()


@task(name="split")
def split_task(validated, config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded, stratified (or time-ordered) train/holdout split of the validated data."""
    return split_dataset(validated.frame, validated.target, config.holdout_fraction, config.seed,
                         config.stratify, config.time_column)


# -- watching a prefix for new data -------------------------------------------------------------

@dataclass(frozen=True)
class ArrivedObject:
    """A dataset object found under a watched prefix."""

    uri: str
    fingerprint: str
    size: int
    rows: int


def list_datasets(prefix: str, patterns: tuple[str, ...] = ("*.csv", "*.parquet")) -> dict[str, tuple[str, int]]:
    """Dataset objects directly under `prefix`: URI -> (fingerprint, size). S3 objects are
    identified by ETag (no download); local files by a content hash."""
    import fnmatch

    fs, path = _filesystem(prefix)
    fs.invalidate_cache()  # a sensor must see objects written since its last look
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    protocol = prefix.split("://", 1)[0] + "://" if "://" in prefix else ""
    found: dict[str, tuple[str, int]] = {}
    for entry in entries:
        name = entry["name"]
        if entry.get("type") != "file" or not any(fnmatch.fnmatch(name.rsplit("/", 1)[-1], p) for p in patterns):
            continue
        uri = protocol + name if protocol and not name.startswith(protocol) else name
        found[uri] = (fingerprint_dataset(uri).value, int(entry.get("size") or 0))
    return found


def count_rows(uri: str) -> int:
    """Data rows in a CSV (lines after the header) or a Parquet file (from its metadata)."""
    fs, path = _filesystem(uri)
    if dataset_format(uri) == "parquet":
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as handle:
            return pq.ParquetFile(handle).metadata.num_rows
    lines = 0
    with fs.open(path, "rb", compression="infer") as handle:
        last = b"\n"
        while chunk := handle.read(_CHUNK):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    lines += last != b"\n"  # a last line without a newline
    return max(lines - 1, 0)


def new_objects(listed: dict[str, tuple[str, int]], seen: dict[str, str]) -> list[tuple[str, str, int]]:
    """Objects not seen before, or seen with another fingerprint (rewritten in place)."""
    return [(uri, fp, size) for uri, (fp, size) in sorted(listed.items()) if seen.get(uri) != fp]
