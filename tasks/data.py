"""Loading datasets from any fsspec URI, and fingerprinting them cheaply.

The fingerprint is what caching and lineage key on: a content hash for local files, the ETag
(and version id, when the bucket is versioned) for S3 objects, so unchanged data is recognised
without reading it twice and changed data never hits a stale cache.
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.caching import STEP_CACHE
from tasks.config import CSV_DELIMITERS, CsvConfig, DataConfig
from tasks.errors import DataValidationError
from tasks.retry_policies import IO_RETRIES

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
def load_task(fingerprint: DatasetFingerprint, fmt: str, options: CsvConfig | None = None) -> pd.DataFrame:
    """Read the dataset whose fingerprint was just taken; cached on (fingerprint, format, CSV options)."""
    frame, dialect = _read_whole(fingerprint.uri, fmt, options)
    get_run_logger().info("read %d rows x %d columns%s", len(frame), frame.shape[1],
                          f"; CSV {dialect.describe()}" if dialect else " (Parquet)")
    return frame


# -- the train/holdout split ----------------------------------------------------------------------
# A row's side is a function of the row itself (TFX ExampleGen's hash buckets): the same row lands
# on the same side in every snapshot of a growing table, so a later model can be compared with an
# earlier one on rows that neither was fit on, without storing any data, only these parameters.

CONTENT_KEY = "content"
# Version of `row_keys`' hashing, recorded with every split. Scheme 1 (BLAKE2b of each row's joined
# text, about 13 s per million rows) was replaced by scheme 2 (per-column, per-distinct-value
# hashing, about 1 s): a model split under another scheme has other keys for the same rows.
ROW_KEY_SCHEME = "2"


# Tags keep the kinds of value apart, so a number never collides with a text by construction.
_MISSING = np.uint64(0x9E3779B97F4A7C15)
_INTEGER = np.uint64(0x632BE59BD9B4E019)
_FLOAT = np.uint64(0x85EBCA77C2B2AE63)
_COPY = np.uint64(0xC2B2AE3D27D4EB4F)
_COMBINE = np.uint64(0x100000001B3)


def _text_hashes(values: pd.Series) -> np.ndarray:
    """BLAKE2b (8 bytes) of each text, as uint64."""
    blake = functools.partial(hashlib.blake2b, digest_size=8)
    texts = values.astype(str).to_numpy(dtype=object).tolist()  # plain str: iterating Arrow strings is slow
    return np.frombuffer(b"".join([blake(t.encode()).digest() for t in texts]), dtype=">u8").astype("uint64")


def _value_hashes(values: pd.Series) -> np.ndarray:
    """A uint64 per distinct value that does not depend on how the file stored it: blanks, None
    and NaN are one missing value; a number (also one stored as text) hashes by its value, so 1,
    1.0 and "1.0" agree; text is stripped; booleans hash as "True"/"False"."""
    if values.empty:
        return np.zeros(0, dtype="uint64")
    if pd.api.types.is_bool_dtype(values) or pd.api.types.infer_dtype(values, skipna=True) == "boolean":
        return _text_hashes(values.astype(str))
    text, exact = None, None
    if pd.api.types.is_integer_dtype(values):
        exact = values.to_numpy(dtype="int64")
        numbers = exact.astype("float64")
    elif pd.api.types.is_numeric_dtype(values):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    else:
        text = values.astype("string").str.strip()
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    hashes = np.full(len(values), _MISSING, dtype="uint64")
    integral = np.isfinite(numbers) & (numbers == np.floor(numbers))
    if exact is None:  # a float that holds a whole number hashes as that integer (1.0 == 1)
        integral &= np.abs(numbers) < 2**53
        exact = np.where(integral, numbers, 0).astype("int64")
    hashes[integral] = _mix64(exact[integral].view("uint64") ^ _INTEGER)
    fraction = ~np.isnan(numbers) & ~integral  # also +/-inf
    hashes[fraction] = _mix64(numbers[fraction].view("uint64") ^ _FLOAT)
    if text is not None:
        words = np.isnan(numbers) & text.fillna("").ne("").to_numpy()
        hashes[words] = _text_hashes(text[words])
    return hashes


def _column_hashes(series: pd.Series) -> np.ndarray:
    """One uint64 per row of a column; each distinct value is hashed once."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    hashes = _value_hashes(pd.Series(uniques, dtype=series.dtype if len(uniques) else "object"))
    return np.where(codes < 0, _MISSING, hashes[np.maximum(codes, 0)] if len(hashes) else _MISSING)


def row_keys(frame: pd.DataFrame, key_columns: list[str] | None = None) -> pd.Series:
    """A uint64 key per row: a hash of the `key_columns` (the IDs) when given, else of the whole
    row (every column, the target too), columns in name order. A value hashes by what it means,
    not how it is stored (see `_value_hashes`), so the CSV and the Parquet export of the same rows
    get the same keys. Stable across processes, machines and library versions: BLAKE2b for text
    and splitmix64 arithmetic for numbers, both ours, not pandas' hash. Vectorised per column and
    hashed once per distinct value (1M rows x 15 columns in about a second).

    Content keys number identical rows: the k-th copy of a row (k >= 1, in file order) hashes
    with its number, so copies are split like any other rows. Without it every copy lands on one
    side, and a table of few coarse columns (Titanic's: 85% of rows repeat another) gets a holdout
    made of a few big groups (roc_auc 0.32 on it). Snapshots that append rows keep each copy's
    number, hence its side. ID keys are not numbered: rows of one ID stay together."""
    columns = sorted(key_columns) if key_columns else sorted(frame.columns, key=str)
    if frame.empty or not columns:
        return pd.Series(np.zeros(len(frame), dtype="uint64"), index=frame.index, name="row_key")
    keys = np.zeros(len(frame), dtype="uint64")
    with np.errstate(over="ignore"):
        for column in columns:
            keys = _mix64(keys * _COMBINE + _column_hashes(frame[column]))
        if not key_columns:
            copy = pd.Series(keys).groupby(keys, sort=False).cumcount().to_numpy().astype("uint64")
            keys = np.where(copy > 0, _mix64(keys ^ _mix64(copy ^ _COPY)), keys)
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
    key_scheme: str = ROW_KEY_SCHEME  # how row_keys hashed: keys of two schemes cannot be matched

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
                   max_train_time=get("max_train_time"), key_scheme=get("key_scheme") or "1")

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


def stratified_sample(frame: pd.DataFrame, target: str, max_rows: int | None, seed: int = 42) -> pd.DataFrame:
    """At most `max_rows` rows of `frame`, each class keeping its share (all rows when it is small
    enough or `max_rows` is None). Seeded, so a cached and a fresh evaluation agree."""
    if max_rows is None or len(frame) <= max_rows:
        return frame
    from sklearn.model_selection import train_test_split

    sample, _ = train_test_split(frame, train_size=max_rows, random_state=seed, stratify=frame[target])
    return sample
