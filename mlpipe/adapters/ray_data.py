"""Ray Data: a dataset read from its source in blocks, and pandas functions mapped over them.

The table is never one frame in this process: `read_table` makes a lazy Ray Dataset of the
file (Parquet or CSV, a local path or `s3://`), and every pass over it runs as Ray Data tasks,
block by block, on the cluster's workers. What comes back here is small by construction: a
row of statistics per block, the keys that repeat, a bounded sample, a label and a score per
holdout row. The functions mapped are plain pandas functions (`mlpipe/data/blocks.py`, the
feature steps), importable on every worker.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from mlpipe.adapters import ray_cluster
from mlpipe.core.config import CsvConfig
from mlpipe.core.errors import DatasetError
from mlpipe.data.csv_dialect import SAMPLE_BYTES, detect_dialect
from mlpipe.data.reader import dataset_format, filesystem


_task_cpus: contextvars.ContextVar[float] = contextvars.ContextVar("ray_data_task_cpus", default=1.0)


@contextmanager
def task_cpus(cpus: float) -> Iterator[None]:
    """Within the block, the datasets read and mapped here ask `cpus` CPUs per Ray Data task
    (Ray Data's default is 1: on nodes of one CPU each, with Ray Train workers holding part of
    it, a task of 1 CPU would never be scheduled)."""
    token = _task_cpus.set(float(cpus))
    try:
        yield
    finally:
        _task_cpus.reset(token)


def _arrow_filesystem(uri: str):
    """(pyarrow filesystem or None, path): s3fs (as `mlpipe.data.reader.filesystem` configures
    it: the AWS environment, AWS_ENDPOINT_URL_S3) wrapped for Arrow; None for a local path,
    which is made absolute (every node of a cluster reads it at that path)."""
    fs, path = filesystem(uri)
    if "://" not in uri or uri.startswith("file://"):
        return None, os.path.abspath(path)
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(fs)), path


def read_table(uri: str, fmt: str = "auto", csv: CsvConfig | None = None):
    """A lazy Ray Dataset of the file at `uri`, read in blocks by Ray Data's tasks. CSV is read
    with the dialect the project's reader detects (delimiter, encoding), and only an empty field
    is missing, as in `mlpipe.data.reader`: tokens stay text for data.na_values to read."""
    import ray.data

    ray_cluster.connect()
    ray.data.DataContext.get_current().enable_progress_bars = False
    arrow_fs, path = _arrow_filesystem(uri)
    if dataset_format(uri, fmt) == "parquet":
        return ray.data.read_parquet(path, filesystem=arrow_fs, num_cpus=_task_cpus.get())
    import pyarrow.csv as pacsv

    fs, fs_path = filesystem(uri)
    with fs.open(fs_path, "rb", compression="infer") as handle:
        head = handle.read(SAMPLE_BYTES)
    dialect, _ = detect_dialect(head, csv, at_end=len(head) < SAMPLE_BYTES, uri=uri)
    if dialect.decimal != ".":
        raise DatasetError(f"{uri}: a CSV with a decimal comma is not read in blocks (compute.stream); convert it "
                           "to Parquet, or train without compute.stream")
    return ray.data.read_csv(path, filesystem=arrow_fs, num_cpus=_task_cpus.get(),
                             read_options=pacsv.ReadOptions(encoding=dialect.codec.removesuffix("-sig")),
                             parse_options=pacsv.ParseOptions(delimiter=dialect.delimiter),
                             convert_options=pacsv.ConvertOptions(null_values=[""], strings_can_be_null=True))


def map_blocks(dataset, fn: Callable[..., pd.DataFrame], **kwargs: Any):
    """`fn(block, **kwargs)` on every block (a pandas frame), lazily; `fn` may drop rows."""
    return dataset.map_batches(fn, batch_format="pandas", batch_size=None, fn_kwargs=kwargs, num_cpus=_task_cpus.get())


def to_frame(dataset) -> pd.DataFrame:
    """The dataset's rows as one frame here: only for results small by construction."""
    return dataset.to_pandas()


def repeated_values(dataset, column: str) -> pd.Series:
    """The values of `column` that occur in more than one row (a distributed group-by on that
    column alone), sorted."""
    counts = dataset.select_columns([column]).groupby(column).count().to_pandas()
    repeated = counts[column][counts.iloc[:, -1] > 1]
    return repeated.sort_values(ignore_index=True)


def map_groups(dataset, column: str, fn: Callable[[pd.DataFrame], pd.DataFrame]):
    """`fn(group)` on all the rows with one value of `column`, wherever they were read."""
    return dataset.groupby(column).map_groups(fn, batch_format="pandas", num_cpus=_task_cpus.get())


def union(first, *others):
    return first.union(*others) if others else first
