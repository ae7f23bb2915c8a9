"""Batch scoring: a registered model over a dataset of any size, predictions out as Parquet.

The input is read in chunks (CSV rows or Parquet batches), so memory stays flat whatever its
size. Each chunk goes through the model's own conform step (`mlpipe.model.conform`), the same one
`mlflow.pyfunc` and `mlflow models serve` use: numbers stored as text parsed, blanks, the model's
missing-value tokens and +-inf missing, categories as text. A value that is not a number in a
numeric column rejects its row, reported by its file line (CSV) or row index (Parquet); every
other row is scored. Predictions are written to a temporary sibling of the output and moved into place
only when complete, so readers see the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlpipe.core.lineage import redact_uri
from mlpipe.data.reader import csv_record_lines, open_chunks, row_locator, storage_options
from mlpipe.model.conform import Conform, holds_booleans, require_columns

NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})
OUTPUT_COLUMNS = ("probability", "label", "model_name", "model_version", "scored_at")
ROW_NUMBER_COLUMN = "row_number"
REJECTED_SAMPLE = 100


@dataclass(frozen=True)
class InputColumn:
    """One column of the model's input signature: its name and MLflow type ("double", "string")."""

    name: str
    type: str


@dataclass(frozen=True)
class ScoringModel:
    """The registered version a run scores with, and the columns it reads."""

    name: str
    version: str
    ref: str  # what the caller asked for: an alias or a version number
    inputs: tuple[InputColumn, ...]

    @property
    def columns(self) -> list[str]:
        return [column.name for column in self.inputs]


@dataclass(frozen=True)
class RejectedRow:
    """One value that kept its row from being scored."""

    row: int  # 0-based data row of the input (the header is not a row)
    column: str
    value: str
    problem: str
    location: str = ""  # what a person opens: "line 239" of a CSV file, else "row index 237"


@dataclass
class ConformedChunk:
    """A chunk ready for the model: the accepted rows' features, which rows those are, and
    why the others were rejected."""

    features: pd.DataFrame
    accepted: np.ndarray  # bool per input row of the chunk
    rejected: list[RejectedRow]


@dataclass
class ScoringSummary:
    """What one `score` run read, scored, rejected and wrote; the flow returns it."""

    rows_in: int
    rows_scored: int
    rows_rejected: int
    rejected: list[RejectedRow]  # the first REJECTED_SAMPLE problems, in input order
    output_uri: str
    model_name: str
    model_version: str
    scored_at: datetime
    data_uri: str = ""
    model_ref: str = ""
    id_column: str = ""  # the id column written: the requested one, or `row_number` when absent
    threshold: float = 0.5
    rows_positive: int = 0
    warnings: list[str] = field(default_factory=list)


# -- Conforming rows: the model's own conform step -----------------------------------------------

def _own_conform(pipeline) -> Conform | None:
    """The model's own conform step (the first of every model registered since models carry one)."""
    own = getattr(pipeline, "named_steps", {}).get("conform")
    return own if isinstance(own, Conform) else None


def conform_step(pipeline, inputs: Sequence[InputColumn], chunk: pd.DataFrame) -> Conform:
    """The model's own conform step (its first). A model registered before models carried one
    gets a step built from its signature: its numeric columns parsed, the rest (and booleans,
    which it was trained on as categories) as text."""
    own = _own_conform(pipeline)
    if own is not None:
        return own
    require_columns(chunk.columns, [column.name for column in inputs])
    numeric = [c.name for c in inputs if c.type in NUMERIC_TYPES and not holds_booleans(chunk[c.name])]
    return Conform(numeric=numeric, categorical=[c.name for c in inputs if c.name not in numeric]).fit(chunk)


def conform_chunk(chunk: pd.DataFrame, conform: Conform, first_row: int = 0, transform: bool = True) -> ConformedChunk:
    """One chunk through the conform step: rows holding a value that is not a number in a numeric
    column are rejected (`first_row` is the chunk's position in the input, so they carry their row
    number in the whole file); the others come out as the model reads them, or, with
    `transform=False` (a model whose own first step conforms them), as they stand but for the
    numbers read as text: parsed here once, they reach that step as numbers."""
    parsed: dict[str, pd.Series] = {}
    refused, problems = conform.problems(chunk, parsed)
    accepted = ~refused
    rows = chunk.assign(**parsed) if parsed else chunk  # numbers read as text, parsed once: not again
    rows = rows[accepted] if refused.any() else rows
    return ConformedChunk(features=conform.transform(rows) if transform else rows, accepted=accepted,
                          rejected=[RejectedRow(first_row + p.position, p.column, p.value, p.problem)
                                    for p in problems])


# -- Writing atomically -----------------------------------------------------------------------

def output_schema(id_column: str, id_type: pa.DataType) -> pa.Schema:
    """The predictions file's columns: the id, then the model's outputs and provenance."""
    return pa.schema([
        pa.field(id_column, id_type),
        pa.field("probability", pa.float64()),
        pa.field("label", pa.int64()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
    ])


def predictions_table(ids, probability: np.ndarray, threshold: float, model_name: str, model_version: str,
                      scored_at: datetime, schema: pa.Schema) -> pa.Table:
    """One chunk of predictions; `label` is 1 where `probability >= threshold`."""
    rows = len(probability)
    return pa.table([
        pa.array(ids, type=schema.field(0).type, from_pandas=True),
        pa.array(probability, type=pa.float64()),
        pa.array((probability >= threshold).astype("int64"), type=pa.int64()),
        pa.repeat(pa.scalar(model_name, pa.string()), rows),
        pa.repeat(pa.scalar(model_version, pa.string()), rows),
        pa.repeat(pa.scalar(scored_at, pa.timestamp("us", tz="UTC")), rows),
    ], schema=schema)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return "file" in protocols or "local" in protocols


def write_parquet_atomically(tables: Iterable[pa.Table], output_uri: str, schema: pa.Schema) -> int:
    """Write `tables` as one Parquet file at `output_uri` (a path or any fsspec URI); returns
    the rows written.

    The file is written to a temporary sibling (`<output>.tmp-<pid>-<uuid>`) and moved into
    place once complete: a rename locally, a server-side copy on S3, so a reader never sees a
    partial file. If anything fails (including the iterator producing `tables`), the temporary
    object is removed and an existing output is left as it was. A temporary file a killed
    writer on this machine left (its PID gone) is removed by the next write of the same output.
    """
    fs, path = fsspec.core.url_to_fs(output_uri, **storage_options(output_uri))
    if fs.isdir(path):
        raise ValueError(f"output {output_uri} is a folder; point output_uri at a file, e.g. .../predictions.parquet")
    if _is_local(fs):
        fs.makedirs(fs._parent(path), exist_ok=True)  # never on S3: that could create a bucket
        _remove_left_by_dead_writers(path)
    temporary = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
    rows = 0
    try:
        with fs.open(temporary, "wb") as handle, pq.ParquetWriter(handle, schema) as writer:
            for table in tables:
                writer.write_table(table)
                rows += table.num_rows
        fs.mv(temporary, path)
    except BaseException:
        try:
            if fs.exists(temporary):
                fs.rm(temporary)
        except Exception:  # noqa: BLE001  (the original error is the one worth reporting)
            pass
        raise
    return rows


def _remove_left_by_dead_writers(path: str) -> None:
    """Local temporary siblings of `path` whose writer (the PID in the name) is gone."""
    from mlpipe.core.processes import pid_is_dead, process_identity

    for leftover in Path(path).parent.glob(Path(path).name + ".tmp-*"):
        pid = leftover.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if pid_is_dead(process_identity(), pid):
            leftover.unlink(missing_ok=True)


# -- Scoring ----------------------------------------------------------------------------------

def model_threshold(pipeline) -> float:
    """The threshold the model's `label` uses: evaluation's, recorded in the model (0.5 for a
    model registered before models carried it)."""
    return float(getattr(pipeline, "threshold", 0.5))


def _text_columns(pipeline, inputs: Sequence[InputColumn]) -> list[str]:
    """Columns to read as text, so a code like "007" keeps its zeros and a text column never
    turns numeric in one chunk: the model's categorical columns."""
    own = _own_conform(pipeline)
    if own is not None:
        return list(own.categorical)
    return [c.name for c in inputs if c.type == "string"]


def _positive_proba(pipeline, features: pd.DataFrame) -> np.ndarray:
    proba = pipeline.predict_proba(features)
    classes = list(getattr(pipeline, "classes_", [0, 1]))
    return np.asarray(proba[:, classes.index(1) if 1 in classes else -1], dtype="float64")


def _location(uri: str) -> tuple[str, str]:
    fs, path = fsspec.core.url_to_fs(uri, **storage_options(uri))
    return str(fs.protocol), path


def _check_request(threshold: float, id_column: str, data_uri: str, output_uri: str) -> None:
    """Fail on a threshold outside [0, 1], an id column named like an output column, or an
    output that would overwrite the input."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    if id_column in OUTPUT_COLUMNS:
        raise ValueError(f"id_column {id_column!r} clashes with an output column {list(OUTPUT_COLUMNS)}")
    if _location(data_uri) == _location(output_uri):
        raise ValueError("output_uri is the input's own URI: write predictions somewhere else")


@dataclass
class _ChunkScorer:
    """Turns the chunks of one run into prediction tables, keeping count of the rows it reads,
    scores, rejects and labels 1, and of the first REJECTED_SAMPLE problems."""

    pipeline: Any
    model: ScoringModel
    id_column: str | None  # None: the input has no id column; rows are numbered instead
    threshold: float
    scored_at: datetime
    schema: pa.Schema
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    rows_positive: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)

    def tables(self, chunks: Iterable[pd.DataFrame],
               progress: Callable[[int, int], None] | None = None) -> Iterator[pa.Table]:
        """One predictions table per chunk that has a row to score; `progress(rows_in,
        rows_rejected)` after each non-empty chunk."""
        for chunk in chunks:
            first_row = self.rows_in
            self.rows_in += len(chunk)
            if chunk.empty:
                continue
            table = self._score(chunk, first_row)
            if table is not None:
                yield table
            if progress is not None:
                progress(self.rows_in, self.rows_rejected)

    def _score(self, chunk: pd.DataFrame, first_row: int) -> pa.Table | None:
        """The predictions for the accepted rows of `chunk` (None when every row is rejected),
        the rejected ones counted and sampled."""
        # a model with its own conform step gets the accepted rows raw: conforming them
        # here as well would do that work twice
        conformed = conform_chunk(chunk, conform_step(self.pipeline, self.model.inputs, chunk), first_row,
                                  transform=_own_conform(self.pipeline) is None)
        rejected_rows = int((~conformed.accepted).sum())
        self.rows_rejected += rejected_rows
        self.rejected.extend(conformed.rejected[:REJECTED_SAMPLE - len(self.rejected)])
        if rejected_rows >= len(chunk):
            return None
        ids = (chunk[self.id_column] if self.id_column is not None
               else pd.Series(np.arange(first_row, first_row + len(chunk)), index=chunk.index))
        probability = _positive_proba(self.pipeline, conformed.features)
        self.rows_scored += len(probability)
        self.rows_positive += int((probability >= self.threshold).sum())
        return predictions_table(ids[conformed.accepted], probability, self.threshold, self.model.name,
                                 self.model.version, self.scored_at, self.schema)


def score_dataset(pipeline, model: ScoringModel, data_uri: str, output_uri: str, *,
                  id_column: str = "customer_id", chunk_rows: int = 50_000, threshold: float | None = None,
                  scored_at: datetime | None = None,
                  progress: Callable[[int, int], None] | None = None) -> ScoringSummary:
    """Score every row of `data_uri` with `pipeline` (a registered model, conform step first)
    and write the predictions to `output_uri` atomically. `threshold` defaults to the model's
    own (evaluation's), so `label` agrees with what pyfunc and the REST server answer.

    Columns written: `id_column` (or `row_number` when the input has no such column),
    `probability`, `label`, `model_name`, `model_version`, `scored_at` (one UTC time per run).
    Rows with unparseable numbers are rejected and counted; a missing signature column fails
    before anything is written. `progress(rows_in, rows_rejected)` is called after each chunk.
    """
    threshold = model_threshold(pipeline) if threshold is None else threshold
    _check_request(threshold, id_column, data_uri, output_uri)
    scored_at = (scored_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    text_columns = [*_text_columns(pipeline, model.inputs), id_column]
    warnings: list[str] = []

    with open_chunks(data_uri, chunk_rows, read_columns=[*model.columns, id_column],
                     text_columns=text_columns) as source:
        require_columns(source.columns, model.columns)  # before a byte is written
        has_id = id_column in source.columns
        written_id = id_column if has_id else ROW_NUMBER_COLUMN
        if not has_id:
            warnings.append(f"the input has no {id_column!r} column: predictions carry {ROW_NUMBER_COLUMN!r} "
                            "(0-based data row) instead")
        schema = output_schema(written_id, source.types.get(id_column, pa.string()) if has_id else pa.int64())
        scorer = _ChunkScorer(pipeline, model, id_column if has_id else None, threshold, scored_at, schema)
        write_parquet_atomically(scorer.tables(source.chunks, progress), output_uri, schema)

    rejected = _located(scorer.rejected, data_uri)
    if scorer.rows_rejected:
        warnings.append(f"{scorer.rows_rejected} of {scorer.rows_in} rows were rejected (values that are not "
                        "numbers in numeric columns) and not scored")
    return ScoringSummary(
        rows_in=scorer.rows_in, rows_scored=scorer.rows_scored, rows_rejected=scorer.rows_rejected,
        rejected=rejected, output_uri=redact_uri(output_uri), model_name=model.name,
        model_version=model.version, scored_at=scored_at, data_uri=redact_uri(data_uri), model_ref=model.ref,
        id_column=written_id, threshold=threshold, rows_positive=scorer.rows_positive, warnings=warnings)


def _located(rejected: list[RejectedRow], data_uri: str) -> list[RejectedRow]:
    """The rejected rows with their place in the input: file lines for a CSV (one read of the
    file up to the last of them), row index for Parquet."""
    if not rejected:
        return rejected
    locator = row_locator(data_uri)
    lines = csv_record_lines(data_uri, [r.row for r in rejected]) if locator.uri else {}
    return [replace(r, location=f"line {lines[r.row]}" if lines else f"row index {r.row}") for r in rejected]


def _cell(text: str) -> str:
    """Input values are arbitrary text: keep them from breaking the markdown table."""
    return "`" + text.replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


def summary_markdown(summary: ScoringSummary) -> str:
    """The run summary as the markdown of the `batch-score-summary` artifact."""
    rate = f"{summary.rows_positive / summary.rows_scored:.1%}" if summary.rows_scored else "n/a"
    rejected = ""
    if summary.rows_rejected:
        shown = "\n".join(f"| {r.location} | {_cell(r.column)} | {_cell(r.value)} | {r.problem} |"
                          for r in summary.rejected[:10])
        rejected = f"""
## Rejected rows (first {min(10, len(summary.rejected))}; all sampled ones in `batch-score-rejected`)
| where | column | value | problem |
|---|---|---|---|
{shown}
"""
    return f"""# Batch score: {summary.model_name} v{summary.model_version} (`{summary.model_ref}`)

| | |
|---|---|
| input | `{summary.data_uri}` |
| output | `{summary.output_uri}` |
| rows in | {summary.rows_in} |
| rows scored | {summary.rows_scored} |
| rows rejected | {summary.rows_rejected} |
| label 1 (probability >= {summary.threshold}) | {summary.rows_positive} ({rate}) |
| id column | `{summary.id_column}` |
| scored at (UTC) | {summary.scored_at.isoformat()} |
{rejected}"""



