"""The data stage's Prefect tasks: resolve the data source, fingerprint it, load it (cached on the
fingerprint), and split it. The work is done by kernel modules: mlpipe/data/reader.py (reading,
fingerprints), mlpipe/data/sources.py (prefixes) and mlpipe/data/splitting.py (the split)."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mlpipe.core.config import CsvConfig, DataConfig, SplitConfig
from mlpipe.core.memory import empty_like, release_before_step, return_freed_memory
from mlpipe.core.retry_policies import IO_RETRIES
from mlpipe.data.reader import DatasetFingerprint, fingerprint_dataset, read_dataset_with_dialect
from mlpipe.data.sources import DataSource, resolve_data_source
from mlpipe.data.splitting import Split, split_validated
from mlpipe.data.validation import ValidatedData
from mlpipe.tasks.caching import cache_key


@task(name="fingerprint", **IO_RETRIES)
def fingerprint_task(*, data: DataConfig) -> DatasetFingerprint:
    """Fingerprint the configured dataset (cheap: S3 ETag or a local content hash)."""
    return fingerprint_dataset(data.uri)


@task(name="resolve-data", **IO_RETRIES)
def resolve_data_task(*, data: DataConfig) -> DataSource:
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
    cache_policy=cache_key("fingerprint", "fmt", "csv"),
    persist_result=True,
    cache_result_in_memory=False,
    **IO_RETRIES,
)
def load_task(*, fingerprint: DatasetFingerprint, fmt: str, csv: CsvConfig | None = None) -> pd.DataFrame:
    """Read the dataset whose fingerprint was just taken; cached on (fingerprint, format, CSV options)."""
    frame, dialect = read_dataset_with_dialect(fingerprint.uri, fmt, csv)
    return_freed_memory()  # the parser's buffers, before the table is persisted
    get_run_logger().info("read %d rows x %d columns%s", len(frame), frame.shape[1],
                          f"; CSV {dialect.describe()}" if dialect else " (Parquet)")
    return frame


@task(name="split", cache_policy=NO_CACHE)  # cheap; hashing the frames for a key would cost more
def split_task(*, validated: ValidatedData, split: SplitConfig) -> Split:
    """Hash-stable (or time-ordered) train/holdout split of the validated data, with the
    holdout rows' keys and the split parameters recorded on the model version. The split takes
    the validated table's rows over: `validated.frame` keeps its columns and dtypes, not its rows
    (every row lives on in the split; the whole table would be one more copy held all run)."""
    release_before_step(validated.frame)  # what reading and validating freed
    result = split_validated(validated, split)
    validated.frame = empty_like(validated.frame)
    return result
