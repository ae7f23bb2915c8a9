"""Loading datasets from any fsspec URI, and fingerprinting them cheaply.

The fingerprint is what caching and lineage key on: a content hash for local files, the ETag
(and version id, when the bucket is versioned) for S3 objects, so unchanged data is recognised
without reading it twice and changed data never hits a stale cache.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from tasks.caching import STEP_CACHE
from tasks.config import CSV_DELIMITERS, CsvConfig, DataConfig
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
    if name.endswith((".csv", ".txt", ".tsv", ".tab")):
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


def read_dataset(uri: str, fmt: str = "auto", options: CsvConfig | None = None) -> pd.DataFrame:
    """Read a whole CSV or Parquet file into a DataFrame. A CSV's dialect is detected (or taken
    from `options`); duplicate column names are refused, naming them, where pandas would
    silently rename them to `x.1`."""
    return _read_whole(uri, fmt, options)[0]


def _read_whole(uri: str, fmt: str, options: CsvConfig | None) -> tuple[pd.DataFrame, CsvDialect | None]:
    with open_chunks(uri, None, fmt=fmt, options=options, allow_empty=True) as source:
        frames = list(source.chunks)
    return (frames[0] if frames else pd.DataFrame(columns=source.columns)), source.dialect


# -- Reading: one reader, whole or in chunks ------------------------------------------------------

_SAMPLE_BYTES = 64 << 10  # the head that dialect detection looks at
_SAMPLE_LINES = 50
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


@dataclass(frozen=True)
class CsvDialect:
    """How a CSV file is written: found by detection or taken from `data.csv`."""

    delimiter: str
    decimal: str = "."
    encoding: str = "utf-8"
    bom: bool = False  # the file starts with a byte-order mark (which then names the encoding)
    detected: bool = True  # the delimiter was detected, not configured

    @property
    def codec(self) -> str:
        """The Python codec that decodes the file (and drops its byte-order mark)."""
        return "utf-8-sig" if self.bom and codecs.lookup(self.encoding).name == "utf-8" else self.encoding

    def describe(self) -> str:
        delimiter = _DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))
        return (f"{delimiter}-delimited ({'detected' if self.detected else 'configured'}), decimal "
                f"{self.decimal!r}, {self.encoding}{' with a byte-order mark' if self.bom else ''}")


def name_list(names, limit: int = 8, width: int = 24) -> str:
    """A few names for an error line: at most `limit`, each cut to `width` characters in the
    middle, where long names that share a prefix still show how they differ."""
    names = [str(name) for name in names]
    tail = (width - 3) // 2
    shown = [name if len(name) <= width else name[:width - 3 - tail] + "..." + name[-tail:] for name in names[:limit]]
    more = f", ... {len(names) - limit} more" if len(names) > limit else ""
    return "[" + ", ".join(repr(name) for name in shown) + more + "]"


def _not_decodable(uri: str, encoding: str, where: str) -> str:
    if codecs.lookup(encoding).name == "utf-8":
        return (f"{uri} is not UTF-8 ({where}): set data.csv.encoding to the file's encoding "
                "(e.g. latin-1, cp1252) or re-export it as UTF-8")
    return f"{uri} cannot be read as {encoding} ({where}): check data.csv.encoding"


def _sample_rows(lines: list[str], delimiter: str) -> list[int] | None:
    """Field counts of the sampled non-blank lines, or None when they do not parse."""
    try:
        return [len(row) for row in csv.reader(lines, delimiter=delimiter) if row]
    except csv.Error:
        return None


def guess_delimiter(lines: list[str], candidates: Sequence[str] = CSV_DELIMITERS) -> str | None:
    """The candidate that splits the header into the most columns and every sampled row into as
    many (the share of rows that agree decides first); None when none splits the header."""
    best, best_key = None, (0.0, 1)
    for delimiter in candidates:
        widths = _sample_rows(lines, delimiter)
        if not widths or widths[0] < 2:
            continue
        rows = widths[1:]
        agree = sum(width == widths[0] for width in rows) / len(rows) if rows else 1.0
        if (agree, widths[0]) > best_key:
            best, best_key = delimiter, (agree, widths[0])
    return best


def detect_dialect(head: bytes, options: CsvConfig | None = None, at_end: bool = True,
                   uri: str = "the dataset") -> tuple[CsvDialect, list[str]]:
    """The dialect of a CSV file from its first bytes (`at_end`: the file is no longer), and the
    sampled lines. A byte-order mark names the encoding; otherwise `options.encoding` does. The
    delimiter is `options.delimiter`, or detected among `,` `;` tab `|` (`;` tab `|` with a
    decimal comma), falling back to `,` (`;` with a decimal comma) when no candidate fits."""
    options = options or CsvConfig()
    encoding = next((name for mark, name in _BOMS if head.startswith(mark)), None)
    dialect = CsvDialect(options.delimiter, options.decimal, encoding or options.encoding, bom=encoding is not None,
                         detected=False)
    try:
        text = codecs.getincrementaldecoder(dialect.codec)().decode(head, final=at_end)
    except UnicodeDecodeError as error:
        raise DatasetError(_not_decodable(uri, dialect.encoding, f"byte {error.start}")) from None
    lines = text.splitlines(keepends=True)
    if not at_end and len(lines) > 1:
        lines = lines[:-1]  # the sample may end inside a line
    lines = lines[:_SAMPLE_LINES]
    if options.delimiter != "auto":
        return dialect, lines
    candidates = [d for d in CSV_DELIMITERS if d != options.decimal]
    delimiter = guess_delimiter(lines, candidates) or candidates[0]
    return replace(dialect, delimiter=delimiter, detected=True), lines


@dataclass
class InputChunks:
    """An open dataset: all its column names (known before the first chunk), the Arrow types
    known up front (Parquet's schema; text columns of a CSV), the chunks themselves, and the
    CSV dialect it was read with (None for Parquet)."""

    columns: list[str]
    types: dict[str, pa.DataType]
    chunks: Iterator[pd.DataFrame]
    dialect: CsvDialect | None = None


class _Rejoined(io.RawIOBase):
    """The bytes already read for detection, then the rest of the file: so the head is looked
    at without reading the file twice or seeking (compressed streams may not seek)."""

    def __init__(self, head: bytes, rest):
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size], self._head = self._head[:size], self._head[size:]
            return size
        data = self._rest.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _no_access(uri: str) -> str:
    return (f"no permission to read {uri}: check the file's permissions, or for S3 the credentials "
            "(AWS_* environment, AWS_PROFILE) and the bucket policy")


@contextmanager
def open_chunks(uri: str, chunk_rows: int | None, read_columns: Sequence[str] | None = None,
                text_columns: Sequence[str] = (), fmt: str = "auto", options: CsvConfig | None = None,
                allow_empty: bool = False) -> Iterator[InputChunks]:
    """Open a CSV or Parquet dataset at any fsspec URI for reading `chunk_rows` rows at a time
    (None: the whole file as one chunk); memory stays flat whatever the file's size.

    Only `read_columns` (those present) are returned. CSV `text_columns` are read as text, so a
    code like "007" keeps its zeros and a text column never turns numeric in one chunk. The CSV
    dialect is detected from the first lines, or taken from `options`. An empty file (no header)
    is refused unless `allow_empty`, which gives no columns and no chunks.
    """
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    fmt = dataset_format(uri, fmt)
    fs, path = _filesystem(uri)
    try:
        handle = fs.open(path, "rb", compression="infer")
    except FileNotFoundError:
        raise DatasetError(f"dataset {uri} does not exist") from None
    except PermissionError:
        raise DatasetError(_no_access(uri)) from None
    with handle:
        if fmt == "parquet":
            yield _parquet_chunks(uri, handle, chunk_rows, read_columns)
        else:
            yield _csv_chunks(uri, handle, chunk_rows, read_columns, text_columns, options, allow_empty)


def _parquet_chunks(uri: str, handle, chunk_rows: int | None, read_columns: Sequence[str] | None) -> InputChunks:
    try:
        parquet = pq.ParquetFile(handle)
    except PermissionError:
        raise DatasetError(_no_access(uri)) from None
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise DatasetError(f"{uri} is not a readable Parquet file: {error}") from None
    schema = parquet.schema_arrow
    wanted = None if read_columns is None else [c for c in schema.names if c in set(read_columns)]

    def chunks() -> Iterator[pd.DataFrame]:
        try:
            if chunk_rows is None:
                yield parquet.read(columns=wanted).to_pandas()
                return
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=wanted):
                yield batch.to_pandas()
        except PermissionError:
            raise DatasetError(_no_access(uri)) from None
        except OSError as error:  # truncated or corrupt row groups show up only when read
            raise DatasetError(f"{uri} is not a readable Parquet file: {error}") from None

    return InputChunks(columns=list(schema.names), types={f.name: f.type for f in schema}, chunks=chunks())


def _csv_header(uri: str, first_line: str, delimiter: str) -> list[str]:
    """The header's column names, stripped. Parsed here, not by pandas, which would silently
    rename duplicates to `x.1`: a duplicate is refused, naming it."""
    header = [name.strip() for name in next(csv.reader([first_line], delimiter=delimiter))]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DatasetError(f"{uri} has duplicate column names {name_list(duplicated)}: "
                           "rename them so each is unique")
    return header


def _width_error(uri: str, header: list[str], width: int, dialect: CsvDialect) -> DatasetError:
    return DatasetError(f"{uri}: the header has {len(header)} columns but rows have {width} "
                        f"({dialect.describe()}); check data.csv.delimiter and the quoting")


def _csv_chunks(uri: str, handle, chunk_rows: int | None, read_columns: Sequence[str] | None,
                text_columns: Sequence[str], options: CsvConfig | None, allow_empty: bool) -> InputChunks:
    try:
        head = handle.read(_SAMPLE_BYTES)
    except PermissionError:
        raise DatasetError(_no_access(uri)) from None
    dialect, lines = detect_dialect(head, options, at_end=len(head) < _SAMPLE_BYTES, uri=uri)
    if not lines or not lines[0].strip():
        if allow_empty:
            return InputChunks(columns=[], types={}, chunks=iter(()), dialect=dialect)
        raise DatasetError(f"{uri} is empty: expected a header row naming the columns")
    header = _csv_header(uri, lines[0], dialect.delimiter)
    widths = _sample_rows(lines, dialect.delimiter) or []
    wider = [width for width in widths[1:] if width > len(header)]
    if wider:  # pandas would drop the extra fields or take them for an index
        raise _width_error(uri, header, wider[0], dialect)
    text = io.TextIOWrapper(io.BufferedReader(_Rejoined(head, handle)), encoding=dialect.codec, newline="")
    text.readline()  # the header, parsed above
    wanted = header if read_columns is None else [c for c in header if c in set(read_columns)]
    as_text = [c for c in text_columns if c in wanted]
    return InputChunks(columns=header, types={c: pa.string() for c in as_text},
                       chunks=_parsed_csv(uri, text, header, wanted, as_text, chunk_rows, dialect),
                       dialect=dialect)


def _parsed_csv(uri: str, text, header: list[str], wanted: list[str], as_text: list[str],
                chunk_rows: int | None, dialect: CsvDialect) -> Iterator[pd.DataFrame]:
    """The data rows, parsed by position (so a row wider than the header is an error, never
    silently cut), then named and narrowed to `wanted`."""
    position = {name: i for i, name in enumerate(header)}
    try:
        reader = pd.read_csv(text, header=None, sep=dialect.delimiter, decimal=dialect.decimal,
                             dtype={position[c]: "str" for c in as_text}, chunksize=chunk_rows,
                             index_col=False, skip_blank_lines=True)
        for chunk in [reader] if chunk_rows is None else reader:
            if chunk.shape[1] != len(header):
                raise _width_error(uri, header, chunk.shape[1], dialect)
            chunk.columns = header
            chunk = chunk[wanted]
            yield _decimal_comma_text(chunk, as_text) if dialect.decimal == "," else chunk
    except pd.errors.EmptyDataError:  # a header and no rows
        yield pd.DataFrame({name: pd.Series(dtype="str" if name in as_text else "object") for name in wanted})
    except UnicodeDecodeError:  # the offset the decoder gives is within its buffer, not the file
        raise DatasetError(_not_decodable(uri, dialect.encoding, f"past byte {_SAMPLE_BYTES}")) from None
    except PermissionError:
        raise DatasetError(_no_access(uri)) from None
    except pd.errors.ParserError as error:
        raise DatasetError(f"{uri} is not a well-formed CSV file ({dialect.describe()}): {error}") from None


_DECIMAL_COMMA = r"\s*[+-]?(\d+,?\d*|,\d+)([eE][+-]?\d+)?\s*"


def looks_decimal_comma(series: pd.Series) -> bool:
    """A text column whose every non-blank value is a number written with a decimal comma."""
    if not (pd.api.types.is_string_dtype(series) or pd.api.types.is_object_dtype(series)):
        return False
    present = series.dropna().astype(str)  # True/False in an object column: not numbers
    present = present[present.str.strip() != ""]
    return (bool(present.str.contains(",", regex=False).any())
            and bool(present.str.fullmatch(_DECIMAL_COMMA).all()))


def _decimal_comma_text(chunk: pd.DataFrame, keep: Sequence[str]) -> pd.DataFrame:
    """Numbers with a decimal comma in a column that pandas kept as text (blanks among them):
    written with a point, so validation parses them like any number stored as text."""
    for column in chunk.columns:
        if column not in keep and looks_decimal_comma(chunk[column]):
            chunk[column] = chunk[column].str.replace(",", ".", regex=False)
    return chunk


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
def load_task(fingerprint: DatasetFingerprint, fmt: str, options: CsvConfig | None = None) -> pd.DataFrame:
    """Read the dataset whose fingerprint was just taken; cached on (fingerprint, format, CSV options)."""
    frame, dialect = _read_whole(fingerprint.uri, fmt, options)
    get_run_logger().info("read %d rows x %d columns%s", len(frame), frame.shape[1],
                          f"; CSV {dialect.describe()}" if dialect else " (Parquet)")
    return frame


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


def stratified_sample(frame: pd.DataFrame, target: str, max_rows: int | None, seed: int = 42) -> pd.DataFrame:
    """At most `max_rows` rows of `frame`, each class keeping its share (all rows when it is small
    enough or `max_rows` is None). Seeded, so a cached and a fresh evaluation agree."""
    if max_rows is None or len(frame) <= max_rows:
        return frame
    from sklearn.model_selection import train_test_split

    sample, _ = train_test_split(frame, train_size=max_rows, random_state=seed, stratify=frame[target])
    return sample
