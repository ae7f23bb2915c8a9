"""Drift statistics: how far a new dataset has moved from the reference (the champion's training
data), per feature and for the model's predictions, and the verdict against thresholds.

Per feature the model reads: the population stability index (PSI; numeric columns binned at
the reference's quantiles, categorical columns over the reference's categories plus an
"unseen" and a "missing" bucket), the share of rows with a category the reference never had,
and the change in missing rate. For the model: the PSI of its predicted probabilities on the
reference vs the new data. `DriftThresholds` turns those numbers into a verdict.

A Prefect-free kernel module of pure numpy/pandas functions; mlpipe/stages/monitoring.py is the stage
that reads the data, loads the champion and publishes the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from mlpipe.core.config import Section
from mlpipe.model.conform import text_values

BINS = 10
EPSILON = 1e-4  # stands in for an empty bin's share, so its log ratio stays finite
WORST_FEATURES = 5


class DriftThresholds(Section):
    """When a new dataset counts as drifted. A feature drifts when any of its numbers exceeds
    its threshold; the dataset drifts when at least `min_drifted_features` features drift, or
    when the model's predictions shift by more than `prediction_psi`."""

    psi: float = Field(0.2, ge=0, description="Per-feature PSI above this: the feature drifted "
                                              "(0.1 is a moderate shift, 0.25 a large one)")
    prediction_psi: float = Field(0.2, ge=0, description="PSI of the predicted probabilities above this: drifted")
    unseen_share: float = Field(0.05, ge=0, le=1,
                                description="Share of rows with a category never seen in training above this")
    missing_rate_change: float = Field(0.1, ge=0, le=1,
                                       description="Absolute change in a feature's missing rate above this")
    min_drifted_features: int = Field(1, ge=1, description="Drifted features needed for a drifted verdict")


# -- metrics (pure) ------------------------------------------------------------------------------

def psi_from_counts(reference_counts: np.ndarray, current_counts: np.ndarray, epsilon: float = EPSILON) -> float:
    """PSI = sum((cur - ref) * ln(cur / ref)) over bins, from per-bin counts of each sample."""
    ref = np.asarray(reference_counts, dtype="float64")
    cur = np.asarray(current_counts, dtype="float64")
    if ref.sum() == 0 or cur.sum() == 0:
        return 0.0
    ref = np.clip(ref / ref.sum(), epsilon, None)
    cur = np.clip(cur / cur.sum(), epsilon, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _finite(values) -> np.ndarray:
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return array[np.isfinite(array)]


def quantile_edges(reference, bins: int = BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles. Edges are observed values (no interpolation)
    and ties collapse to one edge, so a column with few distinct values gets one bin per value
    and a constant column gets two bins (<= c, > c)."""
    values = _finite(reference)
    if len(values) == 0:
        return np.array([])
    return np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1], method="inverted_cdf"))


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # side="left": a value equal to an edge falls in the bin below it, so bins are (a, b]
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)


def numeric_psi(reference, current, bins: int = BINS) -> float:
    """PSI of a numeric feature over `bins` quantile bins of the reference. Missing values are
    left out here (the missing-rate change measures them); 0.0 when either side has no values."""
    ref, cur = _finite(reference), _finite(current)
    if len(ref) == 0 or len(cur) == 0:
        return 0.0
    edges = quantile_edges(ref, bins)
    return psi_from_counts(_bin_counts(ref, edges), _bin_counts(cur, edges))


def _category_counts(text: pd.Series, categories: list[str]) -> np.ndarray:
    known = text.isin(categories)
    counts = text[known].value_counts()
    unseen = int((~known & text.notna()).sum())
    return np.array([int(counts.get(c, 0)) for c in categories] + [unseen, int(text.isna().sum())])


def categorical_psi(reference: pd.Series, current: pd.Series) -> float:
    """PSI of a categorical feature over the reference's categories plus an "unseen" bucket
    (categories only the current data has) and a "missing" bucket."""
    ref, cur = text_values(reference), text_values(current)
    if len(ref) == 0 or len(cur) == 0:
        return 0.0
    categories = sorted(set(ref.dropna()))
    return psi_from_counts(_category_counts(ref, categories), _category_counts(cur, categories))


def unseen_share(reference: pd.Series, current: pd.Series) -> float:
    """Share of current rows whose category never occurs in the reference (missing rows excluded
    from the count, not from the denominator)."""
    cur = text_values(current)
    if len(cur) == 0:
        return 0.0
    seen = set(text_values(reference).dropna())
    return float((cur.notna() & ~cur.isin(seen)).sum() / len(cur))


def missing_rate(series: pd.Series) -> float:
    """Share of missing values (0.0 for an empty column)."""
    return float(series.isna().mean()) if len(series) else 0.0


def missing_rate_change(reference: pd.Series, current: pd.Series) -> float:
    """Current missing rate minus the reference's (positive: more gaps than in training)."""
    return missing_rate(current) - missing_rate(reference)


def prediction_psi(reference_proba, current_proba, bins: int = BINS) -> float:
    """PSI of predicted probabilities over `bins` equal-width bins on [0, 1]. Fixed bins, not
    quantiles: a model whose scores collapse into one region must show up as a shift."""
    ref, cur = _finite(reference_proba), _finite(current_proba)
    if len(ref) == 0 or len(cur) == 0:
        return 0.0
    edges = np.linspace(0, 1, bins + 1)[1:-1]
    return psi_from_counts(_bin_counts(ref, edges), _bin_counts(cur, edges))


# -- verdict (pure) ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureDrift:
    """The drift numbers of one feature and the thresholds it crossed."""

    feature: str
    kind: Literal["numeric", "categorical"]
    psi: float
    unseen_share: float  # always 0.0 for numeric features
    missing_ref: float
    missing_cur: float
    reasons: tuple[str, ...] = ()

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    def row(self) -> dict[str, Any]:
        """One row of the drift table (also the JSON form)."""
        return {"feature": self.feature, "kind": self.kind, "psi": round(self.psi, 6),
                "unseen_share": round(self.unseen_share, 6), "missing_ref": round(self.missing_ref, 6),
                "missing_cur": round(self.missing_cur, 6), "drifted": self.drifted}


def feature_reasons(psi: float, unseen: float, missing_change: float, thresholds: DriftThresholds) -> tuple[str, ...]:
    """Which feature thresholds these numbers cross (empty: the feature did not drift)."""
    reasons = []
    if psi > thresholds.psi:
        reasons.append(f"psi {psi:.3f} > {thresholds.psi:g}")
    if unseen > thresholds.unseen_share:
        reasons.append(f"unseen categories {unseen:.1%} > {thresholds.unseen_share:.1%}")
    # Either direction: a column that suddenly fills in is as suspicious as one that empties.
    if abs(missing_change) > thresholds.missing_rate_change:
        reasons.append(f"missing rate changed {missing_change:+.1%} (limit {thresholds.missing_rate_change:.1%})")
    return tuple(reasons)


def feature_drift(feature: str, kind: Literal["numeric", "categorical"], reference: pd.Series,
                  current: pd.Series, thresholds: DriftThresholds) -> FeatureDrift:
    """All drift numbers of one feature, judged against `thresholds`."""
    if kind == "numeric":
        psi, unseen = numeric_psi(reference, current), 0.0
    else:
        psi, unseen = categorical_psi(reference, current), unseen_share(reference, current)
    return FeatureDrift(feature, kind, psi, unseen, missing_rate(reference), missing_rate(current),
                        feature_reasons(psi, unseen, missing_rate_change(reference, current), thresholds))


def drift_verdict(features: list[FeatureDrift], prediction_shift: float,
                  thresholds: DriftThresholds) -> tuple[bool, list[str]]:
    """(drifted, reasons): drifted when at least `min_drifted_features` features drifted, or
    when the prediction PSI exceeds its threshold."""
    drifted = [f for f in features if f.drifted]
    reasons = []
    if len(drifted) >= thresholds.min_drifted_features:
        listed = "; ".join(f"{f.feature}: {', '.join(f.reasons)}" for f in drifted[:WORST_FEATURES])
        more = f"; and {len(drifted) - WORST_FEATURES} more" if len(drifted) > WORST_FEATURES else ""
        reasons.append(f"{len(drifted)} drifted features (at least {thresholds.min_drifted_features} needed): "
                       f"{listed}{more}")
    if prediction_shift > thresholds.prediction_psi:
        reasons.append(f"prediction psi {prediction_shift:.3f} > {thresholds.prediction_psi:g}")
    return bool(reasons), reasons
