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
from dataclasses import asdict, dataclass
from typing import Any

import fsspec
import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from tasks.caching import STEP_CACHE
from tasks.config import DataConfig

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
        raise DatasetError(f"dataset {uri} is a folder; point data.uri at a CSV or Parquet file, or end it "
                           "with / to train on the newest file in it")
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


@task(name="resolve-data", **IO_RETRIES)
def resolve_data_task(data: DataConfig) -> DataSource:
    """The dataset this run trains on: `data.uri`, or the newest object under a prefix."""
    from prefect import get_run_logger

    source = resolve_data_source(data)
    if source.prefix is not None:
        get_run_logger().info("training on %s, the newest of %d dataset object(s) under %s; superseded, not "
                              "trained on: %s", source.data.uri, 1 + len(source.superseded), source.prefix,
                              ", ".join(source.superseded) or "none")
    return source


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


# -- the train/holdout split ----------------------------------------------------------------------
# A row's side is a function of the row itself (TFX ExampleGen's hash buckets): the same row lands
# on the same side in every snapshot of a growing table, so a later model can be compared with an
# earlier one on rows that neither was fit on, without storing any data, only these parameters.

CONTENT_KEY = "content"


def _canonical_text(series: pd.Series) -> pd.Series:
    """One column as text that does not depend on how the file stored it: blanks/None/NaN -> "",
    numbers (also numbers stored as text) in one form (1, 1.0 and "1.0" -> "1"), text stripped,
    booleans "True"/"False". So the CSV and the Parquet export of the same rows hash the same."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype("string").fillna("")
    if pd.api.types.is_numeric_dtype(series):
        text, numbers = None, series.astype("float64")
    else:
        text = series.astype("string").str.strip()
        numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    integral = np.isfinite(numbers) & (numbers == np.floor(numbers)) & (numbers.abs() < 2**53)
    as_number = numbers.astype("string").mask(integral, numbers.where(integral).astype("Int64").astype("string"))
    return as_number.where(numbers.notna(), "" if text is None else text).fillna("")


def row_keys(frame: pd.DataFrame, key_columns: list[str] | None = None) -> pd.Series:
    """A uint64 key per row: a hash of the `key_columns` (the IDs) when given, else of the whole
    row (every column, the target too), each value in the canonical text of `_canonical_text`,
    columns in name order. Stable across processes, machines and library versions (BLAKE2b)."""
    columns = sorted(key_columns) if key_columns else sorted(frame.columns, key=str)
    if frame.empty or not columns:
        return pd.Series(np.zeros(len(frame), dtype="uint64"), index=frame.index, name="row_key")
    parts = [_canonical_text(frame[c]) for c in columns]
    joined = parts[0].str.cat(parts[1:], sep="\x1f") if len(parts) > 1 else parts[0]
    digests = [hashlib.blake2b(text.encode(), digest_size=8).digest() for text in joined]
    keys = np.frombuffer(b"".join(digests), dtype=">u8").astype("uint64")
    return pd.Series(keys, index=frame.index, name="row_key")


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads any uint64 key uniformly over [0, 2**64)."""
    z = values.astype("uint64", copy=True)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_holdout_side(keys, holdout_fraction: float, seed: int) -> np.ndarray:
    """True where a row with this key belongs to the holdout, for a split with this fraction and
    salt (`seed`). Pure arithmetic on the key: the same row, fraction and seed give the same side
    in any snapshot, on any machine."""
    salt = int.from_bytes(hashlib.blake2b(f"mlpipe-split:{seed}".encode(), digest_size=8).digest(), "big")
    with np.errstate(over="ignore"):
        mixed = _mix64(np.asarray(keys, dtype="uint64") ^ np.uint64(salt))
    return (mixed >> np.uint64(11)).astype("float64") / float(1 << 53) < holdout_fraction


def _time_values(series: pd.Series) -> pd.Series:
    """A time column as something ordered: numbers as they are, anything else as datetimes."""
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_datetime64_any_dtype(series):
        return series
    return pd.to_datetime(series, errors="coerce", utc=True, format="mixed")


def parse_time(value: str, like: pd.Series):
    """A recorded time (a tag's text) as a value comparable with `_time_values(like)`."""
    if pd.api.types.is_numeric_dtype(like):
        return float(value)
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp


def newer_than(series: pd.Series, recorded: str) -> np.ndarray:
    """True where a row's time is strictly after the recorded time (missing times: False)."""
    values = _time_values(series)
    newer = values > parse_time(recorded, values)
    return np.asarray(newer.fillna(False) if hasattr(newer, "fillna") else newer, dtype=bool)


@dataclass(frozen=True)
class SplitParams:
    """How a model's rows were split: enough to tell later, for any row, whether that model
    trained on it. Recorded as model-version tags (`mlpipe.split.*`)."""

    method: str  # "hash", "time" or "random"
    holdout_fraction: float
    seed: int
    key: str = CONTENT_KEY  # "content", or "id:<col>,<col>" when keyed on ID columns
    time_column: str | None = None
    max_train_time: str | None = None  # time splits: the newest time the model trained on

    def tags(self) -> dict[str, str]:
        return {"mlpipe.split." + k: "" if v is None else str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "SplitParams | None":
        """The params recorded on a version, or None for a version registered without them."""
        get = lambda k: tags.get("mlpipe.split." + k) or None  # noqa: E731
        if get("method") is None:
            return None
        return cls(method=get("method"), holdout_fraction=float(get("holdout_fraction") or 0),
                   seed=int(get("seed") or 0), key=get("key") or CONTENT_KEY, time_column=get("time_column"),
                   max_train_time=get("max_train_time"))

    def describe(self) -> str:
        if self.method == "time":
            return f"time split on {self.time_column!r} (trained up to {self.max_train_time})"
        keyed = "row content" if self.key == CONTENT_KEY else self.key.removeprefix("id:")
        return f"{self.method} split, holdout {self.holdout_fraction:g}, seed {self.seed}, keyed on {keyed}"


def key_name(key_columns: list[str] | None) -> str:
    """The `SplitParams.key` of a split keyed on these ID columns (none: the row content)."""
    return "id:" + ",".join(sorted(key_columns)) if key_columns else CONTENT_KEY


@dataclass
class Split:
    """Train and holdout rows, the holdout rows' keys and the parameters that made the split."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    holdout_keys: np.ndarray  # uint64, one per holdout row, in order
    params: SplitParams
    time_range: tuple[str, str] | None = None  # oldest and newest time in the data (time splits)


def split_dataset(frame: pd.DataFrame, target: str, holdout_fraction: float = 0.2, seed: int = 42,
                  stratify: bool = True, time_column: str | None = None, method: str = "hash",
                  keys: pd.Series | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/holdout split. `hash` (default): a row is holdout when the hash of its key (`keys`,
    else its content) falls in the holdout fraction, so it stays on the same side in every
    snapshot (not stratified: the class balance of each side follows the data's, within
    sampling noise). `random`: seeded, stratified on the target. With `time_column`: the latest
    rows are the holdout, whatever the method."""
    if time_column:
        if time_column not in frame.columns:
            from tasks.validation import DataValidationError

            raise DataValidationError(f"split.time_column {time_column!r} is not a column of the dataset",
                                      time_column)
        order = _time_values(frame[time_column]).sort_values(kind="stable").index
        ordered = frame.loc[order]
        cut = int(round(len(ordered) * (1 - holdout_fraction)))
        return ordered.iloc[:cut].copy(), ordered.iloc[cut:].copy()
    if method == "hash":
        keys = row_keys(frame) if keys is None else keys.loc[frame.index]
        side = hash_holdout_side(keys.to_numpy(), holdout_fraction, seed)
        return frame.loc[~side].copy(), frame.loc[side].copy()
    from sklearn.model_selection import train_test_split

    labels = frame[target] if stratify else None
    train, holdout = train_test_split(frame, test_size=holdout_fraction, random_state=seed, stratify=labels)
    return train.copy(), holdout.copy()


def split_validated(validated, config) -> Split:
    """Split validated data as `config` (a `SplitConfig`) says, keeping what identifies the rows."""
    from tasks.validation import DataValidationError

    frame, keys = validated.frame, validated.row_keys
    if keys is None:  # data validated without keys (an older cached result): key on the content
        keys = row_keys(frame)
    method = "time" if config.time_column else config.method
    train, holdout = split_dataset(frame, validated.target, config.holdout_fraction, config.seed, config.stratify,
                                   config.time_column, method, keys)
    if train.empty or holdout.empty or holdout[validated.target].nunique() < 2:
        raise DataValidationError(
            f"the {method} split left {len(train)} train and {len(holdout)} holdout rows "
            f"({int(holdout[validated.target].sum()) if len(holdout) else 0} positives in the holdout): the holdout "
            "needs both classes; add data or raise split.holdout_fraction", validated.target)
    max_time = time_range = None
    if config.time_column:
        as_text = lambda v: v.isoformat() if hasattr(v, "isoformat") else repr(float(v))  # noqa: E731
        max_time = as_text(_time_values(train[config.time_column]).max())
        times = _time_values(frame[config.time_column])
        time_range = (as_text(times.min()), as_text(times.max()))
    params = SplitParams(method=method, holdout_fraction=config.holdout_fraction, seed=config.seed,
                         key=validated.key_name or CONTENT_KEY, time_column=config.time_column,
                         max_train_time=max_time)
    return Split(train, holdout, keys.loc[holdout.index].to_numpy(dtype="uint64"), params, time_range)


@task(name="split", cache_policy=NO_CACHE)  # cheap; hashing the frames for a key would cost more
def split_task(validated, config) -> Split:
    """Hash-stable (or time-ordered) train/holdout split of the validated data, with the
    holdout rows' keys and the split parameters recorded on the model version."""
    return split_validated(validated, config)


# -- watching a prefix for new data -------------------------------------------------------------

@dataclass(frozen=True)
class ArrivedObject:
    """A dataset object found under a watched prefix."""

    uri: str
    fingerprint: str
    size: int
    rows: int


def _dataset_entries(prefix: str, patterns: tuple[str, ...]) -> list[tuple[str, dict]]:
    """(URI, fsspec listing entry) of the dataset objects directly under `prefix`."""
    import fnmatch

    fs, path = _filesystem(prefix)
    fs.invalidate_cache()  # a sensor must see objects written since its last look
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return []
    protocol = prefix.split("://", 1)[0] + "://" if "://" in prefix else ""
    found = []
    for entry in entries:
        name = entry["name"]
        if entry.get("type") != "file" or not any(fnmatch.fnmatch(name.rsplit("/", 1)[-1], p) for p in patterns):
            continue
        found.append((protocol + name if protocol and not name.startswith(protocol) else name, entry))
    return found


def list_datasets(prefix: str, patterns: tuple[str, ...] = ("*.csv", "*.parquet")) -> dict[str, tuple[str, int]]:
    """Dataset objects directly under `prefix`: URI -> (fingerprint, size). S3 objects are
    identified by ETag (no download); local files by a content hash."""
    return {uri: (fingerprint_dataset(uri).value, int(entry.get("size") or 0))
            for uri, entry in _dataset_entries(prefix, patterns)}


def _modified(entry: dict) -> float:
    stamp = entry.get("LastModified") or entry.get("mtime") or entry.get("last_modified") or 0
    return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)


def datasets_newest_first(prefix: str, patterns: tuple[str, ...] = ("*.csv", "*.parquet")) -> list[str]:
    """The dataset objects under `prefix`, most recently modified first (ties: the later name
    first, so snapshots named by date sort right even when uploaded in the same second)."""
    entries = _dataset_entries(prefix, patterns)
    return [uri for uri, _ in sorted(entries, key=lambda item: (_modified(item[1]), item[0]), reverse=True)]


@dataclass(frozen=True)
class DataSource:
    """The data a run trains on. When `data.uri` names a prefix (ends with `/`), the newest
    object under it, and the older ones it supersedes (named, so none is dropped silently)."""

    data: DataConfig
    prefix: str | None = None
    superseded: tuple[str, ...] = ()

    def tags(self) -> dict[str, str]:
        if self.prefix is None:
            return {}
        names = [uri.rsplit("/", 1)[-1] for uri in self.superseded]
        listed = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        return {"mlpipe.dataset_prefix": self.prefix, "mlpipe.dataset_superseded": listed or "none"}


def resolve_data_source(data: DataConfig, patterns: tuple[str, ...] = ("*.csv", "*.parquet")) -> DataSource:
    """`data` as it is, or, for a prefix URI (ending in `/`), with the newest dataset object under
    it: each object under a prefix is a snapshot of the whole table (e.g. this week's export),
    so a burst of uploads trains once, on the latest, and the older ones are recorded as
    superseded."""
    if not data.uri.endswith("/"):
        return DataSource(data)
    found = datasets_newest_first(data.uri, patterns)
    if not found:
        raise DatasetError(f"no dataset objects ({', '.join(patterns)}) under {data.uri}")
    return DataSource(data.model_copy(update={"uri": found[0]}), data.uri, tuple(found[1:]))


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
