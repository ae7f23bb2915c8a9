"""The validation stage's Prefect tasks: thin wrappers over `mlpipe.data.validation`."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task

from mlpipe.core.config import DataConfig
from mlpipe.core.memory import return_freed_memory
from mlpipe.data.reader import DatasetFingerprint
from mlpipe.data.validation import ValidatedData, validate_dataset
from mlpipe.tasks.caching import cache_key


@task(name="validate", cache_policy=cache_key("fingerprint", "data", "min_class_rows"), persist_result=True,
      cache_result_in_memory=False)
def validate_task(*, frame: pd.DataFrame, fingerprint: DatasetFingerprint, data: DataConfig,
                  min_class_rows: int = 2) -> ValidatedData:
    """Validate the loaded dataset; cached on (fingerprint, data config), never retried."""
    validated = validate_dataset(frame, data, min_class_rows)
    return_freed_memory()  # validation's temporaries, before its result is persisted beside the table
    logger = get_run_logger()
    for message in validated.report.warnings:
        logger.warning(message)
    report = validated.report
    logger.info("validated %d rows: %d numeric and %d categorical features, %.1f%% positives",
                report.rows, len(report.numeric_features), len(report.categorical_features),
                100 * report.positive_rate)
    return validated
