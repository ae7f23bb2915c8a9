"""Run reports: the Prefect artifacts of a training run and the summary the CLI prints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mlpipe.adapters.mlflow.models import RegisteredVersion
from mlpipe.core.lineage import redact_uri
from mlpipe.data.profile import tokens_text
from mlpipe.stages.promotion import PromotionDecision

CARD_METRICS = ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier")


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
    champion = (f"v{d.champion_version} ({d.metric} {d.champion_score:.4f}; candidate "
                f"{d.candidate_comparison_score:.4f} on the same {d.comparison_rows or 'holdout'} rows)"
                if d.champion_score is not None else (f"v{d.champion_version}" if d.champion_version else "none"))
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in summary.headline_metrics().items())
    return f"""# {summary.model_name} v{summary.version} -> `{d.alias}`

**Decision:** {decision_sentence(summary.version, d)}

| candidate {d.metric} | {d.candidate_score:.4f} |
|---|---|
| previous champion | {champion} |
| comparison set | {_comparison_text(d)} |
| dataset | `{redact_uri(summary.dataset_uri)}` |
| fingerprint | `{summary.dataset_fingerprint}` |
| MLflow run | `{summary.run_id}` |
| new version | {"no (identical rerun: existing version reused)" if summary.reused_version else "yes"} |

## Holdout metrics
| metric | value |
|---|---|
{rows}
"""


def decision_sentence(version: str, d: PromotionDecision) -> str:
    """The decision as one sentence: what happened to the version and why."""
    if d.promoted:
        return f"v{version} is the new champion: {d.reason}."
    if d.alias == "champion":
        return f"v{version} stays champion; nothing changed ({d.reason})."
    kept = f"the champion stays v{d.champion_version}" if d.champion_version else "no version is champion yet"
    return f"v{version} is the challenger and {kept}: {d.reason}."


def _comparison_text(d: PromotionDecision) -> str:
    if d.comparison_rows is None:
        return "none (no champion to compare with)" if d.champion_version is None else "the whole holdout"
    return f"{d.comparison_rows} rows, {d.comparison_positives} positive: {d.comparison_basis}"


def _link(text: str, url: str | None) -> str:
    return f"[`{text}`]({url})" if url else f"`{text}`"


def model_card(*, name: str, version: str, decision: PromotionDecision, metrics: dict[str, float], config,
               fingerprint: str, rows: int, positive_rate: float, split, time_range: tuple[str, str] | None,
               run_id: str, run_url: str | None, flow_run_id: str, flow_run_url: str | None,
               reading: list[str] = ()) -> str:
    """A model version's registry description: what it predicts, what it learned from, how good
    it is and why it got its alias, in a few lines of markdown."""
    data, model = config.data, config.model
    label = data.positive_label if data.positive_label is not None else 1
    positives = int(round(rows * positive_rate))
    params = ", ".join(f"{k}={v}" for k, v in sorted(model.active_params.items())) or "library defaults"
    holdout = ", ".join(f"{k} {metrics[k]:.4f}" for k in CARD_METRICS if k in metrics)
    cv = (f"roc_auc {metrics['cv_roc_auc_mean']:.4f} ± {metrics.get('cv_roc_auc_std', 0.0):.4f} "
          f"({config.evaluation.cv_folds} folds of the train split)" if "cv_roc_auc_mean" in metrics else "not run")
    d = decision
    if d.champion_score is not None:
        versus = (f"{d.metric} {d.candidate_comparison_score:.4f} vs champion v{d.champion_version} "
                  f"{d.champion_score:.4f} on the same rows")
    else:
        versus = "no champion scored" if d.champion_version in (None, version) else "champion not scored"
    lines = [
        f"{name} v{version} predicts the probability that {data.target} is {label} for one row of raw "
        f"data (columns as in the training file); label at threshold {config.evaluation.threshold}.",
        "",
        f"| decision | **{d.alias}**{' (promoted)' if d.promoted else ''}: {d.reason} |",
        "|---|---|",
        f"| comparison set | {_comparison_text(d)}; {versus} |",
        f"| data | `{redact_uri(data.uri)}` |",
        f"| fingerprint | `{fingerprint}` |",
        f"| rows | {rows} ({positives} positive, {positive_rate:.1%}) |",
        *(f"| reading | {line} |" for line in reading),
    ]
    if time_range:
        lines.append(f"| time range | {time_range[0]} .. {time_range[1]} |")
    lines += [
        f"| split | {split.describe()} |",
        f"| model | {model.family} ({params}), seed {model.seed} |",
        f"| holdout | {holdout} |",
        f"| cross-validation | {cv} |",
        f"| MLflow run | {_link(run_id, run_url)} |",
        f"| Prefect flow run | {_link(flow_run_id or 'none (run without Prefect)', flow_run_url)} |",
    ]
    return "\n".join(lines) + "\n"


def model_description(name: str, target: str, positive_label, champion: str | None, challenger: str | None) -> str:
    """The registered model's description: what it is for and which alias serves."""
    label = positive_label if positive_label is not None else 1
    serving = (f"Serve `models:/{name}@champion` (now **v{champion}**)" if champion
               else "No version has passed the promotion gate yet: nothing is `champion`")
    other = f"; `@challenger` (v{challenger}) is the latest version that did not replace it" if challenger else ""
    return (f"Binary classifier that predicts the probability that {target} is {label} from one raw row of the "
            f"training table (trained by mlpipe). {serving}{other}. A version becomes champion only when it passes "
            "the absolute gate and is not worse than the champion on rows neither model trained on. Each version's "
            "description is its model card.\n")


def reading_notes(report) -> list[str]:
    """What reading the data decided on its own, for the model card: unlabeled rows dropped,
    tokens read as missing in numeric columns, and the data.na_values tokens met."""
    notes = []
    if report.unlabeled_rows:
        notes.append(f"{report.unlabeled_rows} unlabeled rows dropped (target missing or unparseable)")
    notes += [f"`{c}`: {tokens_text(t)} read as missing (found in a numeric column)"
              for c, t in report.auto_na_values.items()]
    met = {c: t for c, t in report.missing_tokens.items() if set(t) - {""}}
    if met:
        notes.append("data.na_values read as missing: " + "; ".join(
            f"`{c}` {tokens_text({k: v for k, v in t.items() if k})}" for c, t in list(met.items())[:8]))
    return notes


def flow_run_link(flow_run_id: str, environ) -> str | None:
    """The Prefect UI page of a flow run, only on a server someone configured (PREFECT_UI_URL, or
    PREFECT_API_URL): the local server `mlpipe` starts itself (it names its API in
    MLPIPE_TEMPORARY_PREFECT_API) has no UI and is gone minutes later, and so would be the page."""
    api = environ.get("PREFECT_API_URL", "")
    if api and api == environ.get("MLPIPE_TEMPORARY_PREFECT_API"):
        api = ""
    ui = environ.get("PREFECT_UI_URL") or (api.rstrip("/").removesuffix("/api") if api else "")
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}" if ui and flow_run_id else None


def write_model_card(version: RegisteredVersion, decision: PromotionDecision, metrics: dict[str, float], config,
                     fingerprint, validation_report, split_params, time_range: tuple[str, str] | None = None, *,
                     flow_run_id: str, environ: Mapping[str, str]) -> str:
    """Write the version's model card and the registered model's description into the registry."""
    from mlpipe.adapters.mlflow.aliases import alias_version
    from mlpipe.adapters.mlflow.tracking import run_url
    from mlpipe.adapters.mlflow.versions import describe_model, describe_version, version_description

    existing = version_description(version.name, version.version)
    card = existing if version.reused and existing else model_card(
        name=version.name, version=version.version, decision=decision, metrics=metrics, config=config,
        fingerprint=str(fingerprint), rows=validation_report.rows, positive_rate=validation_report.positive_rate,
        split=split_params, time_range=time_range, run_id=version.run_id, run_url=run_url(version.run_id),
        flow_run_id=flow_run_id, flow_run_url=flow_run_link(flow_run_id, environ),
        reading=reading_notes(validation_report))
    if card != existing:  # an identical rerun keeps the card of the run that made the version
        describe_version(version.name, version.version, card)
    describe_model(version.name, model_description(
        version.name, config.data.target, config.data.positive_label, alias_version(version.name, "champion"),
        alias_version(version.name, "challenger")))
    return card
