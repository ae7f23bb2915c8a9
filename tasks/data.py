"""The data stage's Prefect tasks: resolve the data source, fingerprint it, load it (cached on the
fingerprint), and split it. The work is done by kernel modules: tasks/storage.py (reading,
fingerprints), tasks/data_sources.py (prefixes) and tasks/splitting.py (the split)."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.caching import cache_key
from tasks.config import CsvConfig, DataConfig
from tasks.data_sources import DataSource, resolve_data_source
from tasks.memory import return_freed_memory
from tasks.splitting import Split, split_validated
from tasks.retry_policies import IO_RETRIES
from tasks.storage import DatasetFingerprint, fingerprint_dataset, read_dataset_with_dialect


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
    cache_policy=cache_key("fingerprint", "fmt", "options"),
    persist_result=True,
    cache_result_in_memory=False,
    **IO_RETRIES,
)
def load_task(fingerprint: DatasetFingerprint, fmt: str, options: CsvConfig | None = None) -> pd.DataFrame:
    """Read the dataset whose fingerprint was just taken; cached on (fingerprint, format, CSV options)."""
    frame, dialect = read_dataset_with_dialect(fingerprint.uri, fmt, options)
    return_freed_memory()  # the parser's buffers, before the table is persisted
    get_run_logger().info("read %d rows x %d columns%s", len(frame), frame.shape[1],
                          f"; CSV {dialect.describe()}" if dialect else " (Parquet)")
    return frame


@task(name="split", cache_policy=NO_CACHE)  # cheap; hashing the frames for a key would cost more
def split_task(validated, config) -> Split:
    """Hash-stable (or time-ordered) train/holdout split of the validated data, with the
    holdout rows' keys and the split parameters recorded on the model version."""
    return split_validated(validated, config)
