"""The `drift-monitor` flow: has new data drifted from what the champion was trained on?"""

from __future__ import annotations

from mlpipe.tasks.monitoring import (
    champion_task,
    compare_task,
    current_task,
    emit_drift_task,
    log_drift_task,
    publish_drift_task,
    reference_task,
)
from mlpipe.tasks.ownership import claim_flow_run
from prefect import flow

from mlpipe.data.drift import DriftThresholds
from mlpipe.stages.monitoring import DriftReport


@flow(name="drift-monitor", log_prints=True, validate_parameters=True)
def drift_monitor(data_uri: str, model_name: str = "churn-classifier", model_ref: str = "champion",
                  thresholds: DriftThresholds = DriftThresholds(),
                  experiment: str = "churn-monitoring") -> DriftReport:
    """Compare a new dataset with the training data of a registered model (the champion by
    default) and emit `mlpipe.drift.detected` when it has drifted, which triggers retraining.

    Per feature the model reads: PSI (numeric and categorical), the share of unseen categories
    and the change in missing rate; for the model: the PSI of its predicted probabilities. The
    report is a markdown and a table artifact and an MLflow run in `experiment`. `model_ref` is
    an alias or a version number.

    Args:
        data_uri: The new dataset: a CSV or Parquet file, local or s3://.
        model_name: The registered model in MLflow.
        model_ref: An alias (champion, challenger) or a version number.
        thresholds: When a feature, or the model's predictions, count as drifted.
        experiment: The MLflow experiment the drift report is logged to.
    """
    claim_flow_run()  # label this run with its process; settle what killed processes left
    champion = champion_task(model_name=model_name, model_ref=model_ref)
    reference = reference_task(champion=champion)
    current = current_task(data_uri=data_uri, data=champion.config.data, reference=reference)
    report = compare_task(reference=reference, current=current, champion=champion, data_uri=data_uri,
                          thresholds=thresholds)
    logged = log_drift_task(report=report, experiment=experiment)
    publish_drift_task(report=logged)
    if logged.drifted:
        emit_drift_task(report=logged)
    return logged
