"""Run reports: the Prefect artifacts of a training run and the summary the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.promotion import PromotionDecision
from tasks.registry import RegisteredVersion, redact_uri, tracking_uri


@dataclass
class TrainingSummary:
    """What one `train` run produced; the CLI prints it and the flow returns it."""

    model_name: str
    version: str
    reused_version: bool
    run_id: str
    decision: PromotionDecision
    metrics: dict[str, float]
    dataset_uri: str
    dataset_fingerprint: str
    tracking_uri: str
    warnings: list[str] = field(default_factory=list)

    def headline_metrics(self) -> dict[str, float]:
        keys = ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier",
                "cv_roc_auc_mean", "cv_roc_auc_std")
        return {k: self.metrics[k] for k in keys if k in self.metrics}


def decision_markdown(summary: TrainingSummary) -> str:
    d = summary.decision
    champion = (f"v{d.champion_version} ({d.metric} {d.champion_score:.4f} on this holdout)"
                if d.champion_score is not None else (f"v{d.champion_version}" if d.champion_version else "none"))
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in summary.headline_metrics().items())
    return f"""# {summary.model_name} v{summary.version} -> `{d.alias}`

**Decision:** {"promoted to champion" if d.promoted else f"alias `{d.alias}`"}. {d.reason}.

| | |
|---|---|
| candidate {d.metric} | {d.candidate_score:.4f} |
| previous champion | {champion} |
| dataset | `{redact_uri(summary.dataset_uri)}` |
| fingerprint | `{summary.dataset_fingerprint}` |
| MLflow run | `{summary.run_id}` |
| new version | {"no (identical rerun: existing version reused)" if summary.reused_version else "yes"} |

## Holdout metrics
| metric | value |
|---|---|
{rows}
"""


@task(name="report")
def report_task(version: RegisteredVersion, decision: PromotionDecision, metrics: dict[str, float],
                dataset_uri: str, fingerprint, warnings: list[str]) -> TrainingSummary:
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
