"""The reports stage's Prefect tasks: thin wrappers over `mlpipe.stages.reports`."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mlpipe.adapters.mlflow.models import RegisteredVersion
from mlpipe.adapters.mlflow.tracking import tracking_uri
from mlpipe.core.config import PipelineConfig
from mlpipe.core.lineage import redact_uri
from mlpipe.core.retry_policies import TRACKING_RETRIES
from mlpipe.data.reader import DatasetFingerprint
from mlpipe.data.splitting import Split
from mlpipe.data.validation import ValidationReport
from mlpipe.stages.promotion import PromotionDecision
from mlpipe.stages.reports import TrainingSummary, decision_markdown, write_model_card


@task(name="model-card", cache_policy=NO_CACHE, **TRACKING_RETRIES)
def model_card_task(*, version: RegisteredVersion, decision: PromotionDecision, metrics: dict[str, float],
                    config: PipelineConfig, fingerprint: DatasetFingerprint, validation_report: ValidationReport,
                    split: Split) -> str:
    """Write the version's model card and the registered model's description into the registry."""
    import os

    from prefect import runtime

    return write_model_card(version, decision, metrics, config, fingerprint, validation_report, split.params,
                            split.time_range, flow_run_id=str(runtime.flow_run.id or ""), environ=os.environ)


@task(name="report")
def report_task(*, version: RegisteredVersion, decision: PromotionDecision, metrics: dict[str, float],
                dataset_uri: str, fingerprint: DatasetFingerprint, warnings: list[str]) -> TrainingSummary:
    """Publish the promotion decision (markdown) and the metrics (table) as Prefect artifacts."""
    summary = TrainingSummary(
        model_name=version.name, version=version.version, reused_version=version.reused,
        run_id=version.run_id, decision=decision, metrics=metrics, dataset_uri=redact_uri(dataset_uri),
        dataset_fingerprint=str(fingerprint), tracking_uri=redact_uri(tracking_uri()), warnings=warnings)
    create_markdown_artifact(key="promotion-decision", markdown=decision_markdown(summary),
                             description=f"{version.name} v{version.version}: {decision.alias}")
    create_table_artifact(key="holdout-metrics",
                          table=[{"metric": k, "value": round(v, 6)} for k, v in summary.headline_metrics().items()],
                          description=f"{version.name} v{version.version} holdout metrics")
    return summary
