"""The validation stage's Prefect tasks: thin wrappers over `mlpipe.data.validation`."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from mlpipe.core.config import DataConfig
from mlpipe.core.memory import return_freed_memory
from mlpipe.core.lineage import redact_uri
from mlpipe.data.profile import tokens_text
from mlpipe.data.reader import DatasetFingerprint, row_locator
from mlpipe.data.validation import ValidatedData, validate_dataset
from mlpipe.tasks.caching import cache_key


@task(name="validate", cache_policy=cache_key("fingerprint", "data", "min_class_rows"), persist_result=True,
      cache_result_in_memory=False)
def validate_task(*, frame: pd.DataFrame, fingerprint: DatasetFingerprint, data: DataConfig,
                  min_class_rows: int = 2) -> ValidatedData:
    """Validate the loaded dataset; cached on (fingerprint, data config), never retried. Its
    warnings go to the log, its data profile to a table artifact (`data-profile`)."""
    validated = validate_dataset(frame, data, min_class_rows, rows=row_locator(fingerprint.uri, data.format, data.csv))
    return_freed_memory()  # validation's temporaries, before its result is persisted beside the table
    logger = get_run_logger()
    report = validated.report
    for message in report.warnings:
        logger.warning(message)
    for column, tokens in report.missing_tokens.items():
        logger.info("column %r: read %s as missing (data.na_values)", column, tokens_text(tokens))
    create_table_artifact(key="data-profile", table=report.profile,
                          description=f"Data profile of `{redact_uri(fingerprint.uri)}` ({report.rows} rows): per "
                                      "column the inferred type, the missing share, the tokens read as missing, "
                                      "distinct values and its role.")
    logger.info("validated %d rows: %d numeric and %d categorical features, %.1f%% positives",
                report.rows, len(report.numeric_features), len(report.categorical_features),
                100 * report.positive_rate)
    return validated
