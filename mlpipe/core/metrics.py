"""Classification metrics by name, on positive-class probabilities.

Shared by evaluation, promotion and tuning. Kept free of Prefect, MLflow and plotting imports
because tuning workers (local processes, Ray tasks) import it and should start fast.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from mlpipe.core.config import LOWER_IS_BETTER

_BY_PROBABILITY: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "roc_auc": roc_auc_score,
    "pr_auc": average_precision_score,
    "log_loss": lambda y, p: log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]),
    "brier": brier_score_loss,
}
_BY_LABEL: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy_score,
    "precision": lambda y, labels: precision_score(y, labels, zero_division=0),
    "recall": lambda y, labels: recall_score(y, labels, zero_division=0),
    "f1": lambda y, labels: f1_score(y, labels, zero_division=0),
}
METRICS = ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier")


def score_metric(name: str, y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> float:
    """One metric; label metrics cut `proba` at `threshold`. Computes only what is asked."""
    if name in _BY_PROBABILITY:
        return float(_BY_PROBABILITY[name](y_true, proba))
    if name in _BY_LABEL:
        return float(_BY_LABEL[name](y_true, (proba >= threshold).astype(int)))
    raise ValueError(f"unknown metric {name!r} (allowed: {', '.join(METRICS)})")


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Every metric, for the holdout report."""
    return {name: score_metric(name, y_true, proba, threshold) for name in METRICS}


def is_better_or_equal(metric: str, candidate: float, reference: float, tolerance: float = 0.0) -> bool:
    """True if `candidate` is no worse than `reference` by more than `tolerance`."""
    if metric in LOWER_IS_BETTER:
        return candidate <= reference + tolerance
    return candidate >= reference - tolerance


def ranked_roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """`roc_auc_score(y, scores)` for 0/1 labels, from the ranks of `scores` (Mann-Whitney U,
    ties averaged): the same area as scikit-learn's trapezoids to rounding, without the input
    checks that cost 4x the area itself on permutation importance's 10,000-row copies and
    validation's leak check."""
    positive = np.asarray(y) == 1
    positives = int(positive.sum())
    negatives = len(positive) - positives
    if positives == 0 or negatives == 0:
        return float(roc_auc_score(y, scores))  # one class: scikit-learn's answer and warning
    # float64 ranks: SciPy 1.18 (Python 3.12+) ranks float32 scores as float32, whose sums lose digits
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))
