"""The monitoring stage's Prefect tasks: thin wrappers over `mlpipe.stages.monitoring`."""

from __future__ import annotations

import dataclasses

import pandas as pd
from prefect import get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mlpipe.adapters.mlflow.tracking import log_run
from mlpipe.core.config import DataConfig
from mlpipe.core.lineage import TAG_PREFIX, redact_uri
from mlpipe.core.retry_policies import IO_RETRIES, TRACKING_RETRIES
from mlpipe.data.drift import DriftThresholds
from mlpipe.data.reader import read_dataset
from mlpipe.data.validation import ValidatedData, validate_dataset
from mlpipe.stages.monitoring import (
    DRIFT_EVENT,
    Champion,
    DriftReport,
    align_current,
    compare_to_reference,
    current_format,
    drift_event,
    drift_markdown,
    drift_metrics,
    drift_table,
    load_champion,
)


@task(name="champion", cache_policy=NO_CACHE, **TRACKING_RETRIES)
def champion_task(*, model_name: str, model_ref: str) -> Champion:
    """Resolve the watched model version and load it with its training config."""
    champion = load_champion(model_name, model_ref)
    get_run_logger().info("watching %s v%s (run %s), trained on %s", champion.name, champion.version,
                          champion.run_id, redact_uri(champion.reference_uri))
    return champion


@task(name="load-reference", cache_policy=NO_CACHE, **IO_RETRIES)
def reference_task(*, champion: Champion) -> ValidatedData:
    """Read the champion's training data and validate it as training did."""
    data = champion.config.data
    return validate_dataset(read_dataset(data.uri, data.format, data.csv), data)


@task(name="load-current", cache_policy=NO_CACHE, **IO_RETRIES)
def current_task(*, data_uri: str, data: DataConfig, reference: ValidatedData) -> pd.DataFrame:
    """Read the new dataset and keep the model's columns, cleaned like the reference."""
    report = reference.report
    frame = align_current(read_dataset(data_uri, current_format(data_uri, data.format), data.csv),
                          report.numeric_features, report.categorical_features, data.na_values,
                          report.auto_na_values)
    get_run_logger().info("read %d new rows from %s", len(frame), redact_uri(data_uri))
    return frame


@task(name="compare", cache_policy=NO_CACHE)
def compare_task(*, reference: ValidatedData, current: pd.DataFrame, champion: Champion, data_uri: str,
                 thresholds: DriftThresholds) -> DriftReport:
    """Compute the drift numbers and the verdict."""
    report = compare_to_reference(reference, current, champion, data_uri, thresholds)
    logger = get_run_logger()
    logger.info("drift verdict: %s; prediction psi %.4f; %d of %d features drifted",
                "DRIFTED" if report.drifted else "no drift", report.prediction_psi,
                len(report.drifted_features), len(report.features))
    for reason in report.reasons:
        logger.warning(reason)
    return report


@task(name="log-drift", cache_policy=NO_CACHE, **TRACKING_RETRIES)
def log_drift_task(*, report: DriftReport, experiment: str) -> DriftReport:
    """Record the check as an MLflow run; returns the report with the run id."""
    run_id = log_run(
        experiment=experiment,
        run_name=f"drift-{runtime.flow_run.name or 'local'}",
        params={"data_uri": redact_uri(report.data_uri), "reference_uri": redact_uri(report.reference_uri),
                "model_name": report.model_name, "model_version": report.model_version,
                **{f"threshold.{k}": str(v) for k, v in report.thresholds.model_dump().items()}},
        metrics=drift_metrics(report),
        json_artifacts={"drift_report": report.to_dict()},
        tags={TAG_PREFIX + "monitored_model": f"{report.model_name}/{report.model_version}",
              TAG_PREFIX + "drift": "drifted" if report.drifted else "stable",
              TAG_PREFIX + "prefect_flow_run_id": str(runtime.flow_run.id or "")},
    )
    return dataclasses.replace(report, mlflow_run_id=run_id)


@task(name="publish-drift", cache_policy=NO_CACHE)
def publish_drift_task(*, report: DriftReport) -> None:
    """The drift report (markdown) and the per-feature numbers (table) as Prefect artifacts."""
    summary = f"{report.model_name} v{report.model_version}: {'drifted' if report.drifted else 'no drift'}"
    create_markdown_artifact(key="drift-report", markdown=drift_markdown(report), description=summary)
    create_table_artifact(key="drift-features", table=drift_table(report), description=summary)


@task(name="emit-drift", cache_policy=NO_CACHE)
def emit_drift_task(*, report: DriftReport) -> None:
    """Announce the drift as `mlpipe.drift.detected` on the new dataset (triggers retraining)."""
    from prefect.events import emit_event

    event = emit_event(**drift_event(report))
    get_run_logger().info("emitted %s for %s (event %s)", DRIFT_EVENT, redact_uri(report.data_uri),
                          event.id if event else "not sent: events are off")
