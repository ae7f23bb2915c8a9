"""Drift monitoring, the stage: the champion and its training data, the new dataset cleaned like
it, the drift report and its outputs (markdown, table, MLflow metrics, the event).

The numbers and the verdict come from mlpipe/data/drift.py (pure statistics). A drifted verdict is
announced as the Prefect event `mlpipe.drift.detected`, which triggers retraining. Pure
functions first; the @task wrappers at the end own MLflow, Prefect artifacts, events, retries
and logging.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mlpipe.adapters.mlflow.models import load_version
from mlpipe.adapters.mlflow.tracking import run_artifact_text
from mlpipe.adapters.mlflow.versions import resolve_model_version, version_run_id, version_tags
from mlpipe.core.config import PipelineConfig, build_config
from mlpipe.core.errors import DatasetError
from mlpipe.core.lineage import TAG_PREFIX, redact_uri
from mlpipe.data.drift import (
    WORST_FEATURES,
    DriftThresholds,
    FeatureDrift,
    drift_verdict,
    feature_drift,
    prediction_psi,
)
from mlpipe.data.reader import dataset_format
from mlpipe.data.splitting import split_validated
from mlpipe.data.validation import DataValidationError, ValidatedData
from mlpipe.model.conform import numeric_values, read_tokens_as_missing

DRIFT_EVENT = "mlpipe.drift.detected"


@dataclass(frozen=True)
class DriftReport:
    """The outcome of one drift check; the flow returns it and every output is made from it."""

    data_uri: str
    reference_uri: str
    model_name: str
    model_version: str
    rows_reference: int
    rows_current: int
    features: tuple[FeatureDrift, ...]
    prediction_psi: float
    mean_prediction_reference: float
    mean_prediction_current: float
    drifted: bool
    reasons: tuple[str, ...]
    thresholds: DriftThresholds
    mlflow_run_id: str = ""
    rows_prediction_reference: int = 0  # the champion's holdout rows, which its reference predictions are on

    @property
    def drifted_features(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.drifted]

    def worst_features(self, n: int = WORST_FEATURES) -> list[FeatureDrift]:
        """The `n` features with the highest PSI (drifted ones first on ties)."""
        return sorted(self.features, key=lambda f: (-f.psi, not f.drifted, f.feature))[:n]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (URIs redacted), for the MLflow artifact."""
        return {
            "drifted": self.drifted, "reasons": list(self.reasons),
            "data_uri": redact_uri(self.data_uri), "reference_uri": redact_uri(self.reference_uri),
            "model_name": self.model_name, "model_version": self.model_version,
            "rows_reference": self.rows_reference,
            "rows_prediction_reference": self.rows_prediction_reference, "rows_current": self.rows_current,
            "prediction_psi": self.prediction_psi, "mean_prediction_reference": self.mean_prediction_reference,
            "mean_prediction_current": self.mean_prediction_current,
            "thresholds": self.thresholds.model_dump(), "features": [f.row() for f in self.features],
        }


def compare_datasets(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                     reference_proba, current_proba, thresholds: DriftThresholds, *, data_uri: str,
                     reference_uri: str, model_name: str, model_version: str) -> DriftReport:
    """Compare every feature and the predictions of the two datasets and reach a verdict."""
    features = [feature_drift(c, "numeric", reference[c], current[c], thresholds) for c in numeric]
    features += [feature_drift(c, "categorical", reference[c], current[c], thresholds) for c in categorical]
    shift = prediction_psi(reference_proba, current_proba)
    drifted, reasons = drift_verdict(features, shift, thresholds)
    mean = lambda proba: float(np.mean(proba)) if len(proba) else float("nan")  # noqa: E731
    return DriftReport(
        data_uri=data_uri, reference_uri=reference_uri, model_name=model_name, model_version=model_version,
        rows_reference=len(reference), rows_current=len(current), features=tuple(features),
        prediction_psi=shift, mean_prediction_reference=mean(np.asarray(reference_proba)),
        rows_prediction_reference=len(reference_proba),
        mean_prediction_current=mean(np.asarray(current_proba)), drifted=drifted, reasons=tuple(reasons),
        thresholds=thresholds)


# -- the new dataset, cleaned like the training data (pure) --------------------------------------

def align_current(frame: pd.DataFrame, numeric: list[str], categorical: list[str], na_values: Sequence[str] = (),
                  column_na_values: Mapping[str, Mapping[str, int]] | None = None) -> pd.DataFrame:
    """The columns the model reads, cleaned as validation cleaned the training data (numbers
    stored as text coerced, the missing-value tokens and blanks missing; the target, IDs and
    other columns dropped), without requiring the target: new data usually has no labels yet.
    Text that is not a number where training had numbers becomes missing, so it shows up as a
    missing-rate change instead of failing."""
    if frame.shape[1] == 0 or frame.empty:
        raise DataValidationError("the new dataset is empty: nothing to compare")
    absent = [c for c in [*numeric, *categorical] if c not in frame.columns]
    if absent:
        raise DataValidationError(f"the new dataset lacks feature {absent[0]!r}, which the model reads "
                                  f"(missing: {absent[:5]})", absent[0])
    out = pd.DataFrame(index=frame.index)
    def tokens(column: str) -> tuple[str, ...]:
        return (*na_values, *(column_na_values or {}).get(column, ()))

    for column in numeric:
        out[column] = numeric_values(frame[column], tokens(column))[0]  # text that is not a number: missing
    for column in categorical:
        out[column] = read_tokens_as_missing(frame[column], tokens(column))[0]
    return out


def current_format(uri: str, configured: str) -> str:
    """The new file's format from its extension (it may differ from the training data's), else
    the training config's `data.format`."""
    try:
        return dataset_format(uri)
    except DatasetError:
        return configured


# -- outputs (pure) ------------------------------------------------------------------------------

def drift_table(report: DriftReport) -> list[dict[str, Any]]:
    """One row per feature, highest PSI first (the `drift-features` table artifact)."""
    return [f.row() for f in sorted(report.features, key=lambda f: -f.psi)]


def drift_markdown(report: DriftReport) -> str:
    """The `drift-report` markdown artifact."""
    t = report.thresholds
    verdict = "**drifted**: retraining is triggered" if report.drifted else "no drift beyond the thresholds"
    reasons = "".join(f"- {r}\n" for r in report.reasons) + ("\n" if report.reasons else "")
    rows = "\n".join(
        f"| {f.feature} | {f.kind} | {f.psi:.4f} | {f.unseen_share:.1%} | {f.missing_ref:.1%} -> {f.missing_cur:.1%} "
        f"| {'**yes**: ' + '; '.join(f.reasons) if f.drifted else 'no'} |"
        for f in sorted(report.features, key=lambda f: -f.psi))
    return f"""# Drift of `{redact_uri(report.data_uri)}` vs {report.model_name} v{report.model_version}

**Verdict:** {verdict}.

{reasons}| new data | `{redact_uri(report.data_uri)}` ({report.rows_current} rows) |
|---|---|
| reference | features: the champion's training data `{redact_uri(report.reference_uri)}` \
({report.rows_reference} rows); predictions: its holdout ({report.rows_prediction_reference} rows the champion \
never trained on) |
| prediction psi | {report.prediction_psi:.4f} (threshold {t.prediction_psi:g}) |
| mean predicted probability | {report.mean_prediction_reference:.4f} (holdout) -> \
{report.mean_prediction_current:.4f} (new data) |
| drifted features | {len(report.drifted_features)} of {len(report.features)} (verdict at {t.min_drifted_features}) |
| MLflow run | `{report.mlflow_run_id or '-'}` |

Thresholds per feature: psi > {t.psi:g}, unseen categories > {t.unseen_share:.1%},
missing-rate change > {t.missing_rate_change:.1%}.

## Features
| feature | kind | psi | unseen | missing | drifted |
|---|---|---|---|---|---|
{rows}
"""


def metric_name(text: str) -> str:
    """A feature name as MLflow accepts it in a metric key (letters, digits, `_-. /`)."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)


def drift_metrics(report: DriftReport) -> dict[str, float]:
    """MLflow metrics: `psi.<feature>` per feature plus the prediction shift and the verdict."""
    metrics = {f"psi.{metric_name(f.feature)}": f.psi for f in report.features}
    metrics.update(prediction_psi=report.prediction_psi, drifted_features=float(len(report.drifted_features)),
                   drifted=float(report.drifted), mean_prediction_reference=report.mean_prediction_reference,
                   mean_prediction_current=report.mean_prediction_current)
    return metrics


def drift_event(report: DriftReport) -> dict[str, Any]:
    """Keyword arguments of `emit_event` for a drifted report. The resource id is the new
    dataset's URI as given, because the retrain deployment's trigger passes
    `{{ event.resource.id }}` on as its `data_uri`. The `mlpipe.prefix` label (the folder the
    dataset sits in) is the one the new-data sensor sets, so the trigger's per-prefix debounce
    treats a drift alarm and an arrival in the same folder as one burst."""
    path = report.data_uri.split("?")[0]
    return {
        "event": DRIFT_EVENT,
        "resource": {"prefect.resource.id": report.data_uri,
                     "prefect.resource.name": PurePosixPath(path).name or report.data_uri,
                     "mlpipe.prefix": path.rsplit("/", 1)[0] + "/" if "/" in path else ""},
        "related": [{"prefect.resource.id": f"mlflow.model-version.{report.model_name}.{report.model_version}",
                     "prefect.resource.role": "model", "prefect.resource.name": report.model_name}],
        "payload": {
            "drifted": report.drifted,
            "reasons": list(report.reasons),
            "model_name": report.model_name,
            "model_version": report.model_version,
            "reference_uri": redact_uri(report.reference_uri),
            "prediction_psi": round(report.prediction_psi, 6),
            "drifted_features": len(report.drifted_features),
            "worst_features": [{"feature": f.feature, "kind": f.kind, "psi": round(f.psi, 6), "drifted": f.drifted}
                               for f in report.worst_features()],
            "mlflow_run_id": report.mlflow_run_id,
        },
    }


# -- the champion and its training data -----------------------------------------------------------

@dataclass
class Champion:
    """The model version under watch, the config it was trained with, and where its data was."""

    name: str
    version: str
    run_id: str
    reference_uri: str
    config: PipelineConfig
    model: Any = field(repr=False)  # the sklearn Pipeline

    def predict_proba(self, frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
        """Positive-class probabilities for the raw `columns` of `frame`."""
        if frame.empty:
            return np.array([])
        return np.asarray(self.model.predict_proba(frame[columns])[:, 1], dtype="float64")


def load_champion(name: str, ref: str) -> Champion:
    """The model version `ref` names (a version number or an alias), its training config (the
    run's `config.yaml`) and its training data URI (the version's `mlpipe.dataset_uri` tag: the
    config's copy may be redacted)."""
    version = resolve_model_version(name, ref)
    run_id = version_run_id(name, version)
    raw = yaml.safe_load(run_artifact_text(run_id, "config.yaml")) or {}
    if isinstance(raw.get("split"), dict):
        raw["split"].setdefault("method", "random")  # registered before hash splits existed
    config = build_config(raw)
    uri = version_tags(name, version).get(TAG_PREFIX + "dataset_uri") or config.data.uri
    if "***" in uri:
        raise ValueError(f"{name} v{version} was trained on {uri}, whose credentials were redacted at "
                         "registration: the reference data cannot be read back")
    config = config.model_copy(update={"data": config.data.model_copy(update={"uri": uri})})
    return Champion(name, version, run_id, uri, config, load_version(name, version))


def compare_to_reference(reference: ValidatedData, current: pd.DataFrame, champion: Champion, data_uri: str,
                         thresholds: DriftThresholds) -> DriftReport:
    """Score both datasets with the champion and compare them (see `compare_datasets`)."""
    numeric, categorical = reference.report.numeric_features, reference.report.categorical_features
    columns = [*numeric, *categorical]
    # Reference scores come from the champion's holdout (re-derived with its own split config):
    # scores on rows it was fit on are over-confident, and for a small or overfit model that alone
    # pushes the prediction PSI past the threshold on data that has not drifted at all.
    holdout = split_validated(reference, champion.config.split).holdout
    return compare_datasets(reference.frame, current, numeric, categorical,
                            champion.predict_proba(holdout, columns), champion.predict_proba(current, columns),
                            thresholds, data_uri=data_uri, reference_uri=champion.reference_uri,
                            model_name=champion.name, model_version=champion.version)


# No caching: a drift check must look at the data and the champion as they are now, and hashing
# frames and models for a cache key would be wasted work.

