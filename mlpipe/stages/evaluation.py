"""Scoring a fitted model on the holdout: metrics, cross-validation, plots."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay, confusion_matrix

from mlpipe.adapters import ray_cluster
from mlpipe.compute.evaluation_units import column_importances, fold_scores
from mlpipe.core.config import ComputeConfig, EvaluationConfig
from mlpipe.core.metrics import classification_metrics
from mlpipe.data.splitting import stratified_sample
from mlpipe.model.features import FeatureSpec


@dataclass
class Evaluation:
    """Holdout metrics, CV summary, confusion matrix and PNG plots (name -> bytes). `sample_rows`
    says on how many rows the CV and the permutation importance ran."""

    metrics: dict[str, float]
    confusion: list[list[int]]
    importances: dict[str, float]
    plots: dict[str, bytes] = field(default_factory=dict)
    sample_rows: dict[str, int] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # e.g. the Ray job that ran the folds


def pyplot():
    """matplotlib.pyplot on the headless backend (workers and CI have no display). Imported when
    a plot is drawn, not with this module: a cached rerun draws none and skips its 0.5 s import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (then closed): evaluation's and tuning's plots."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def evaluate_model(model, train: pd.DataFrame, holdout: pd.DataFrame, target: str, spec: FeatureSpec,
                   config: EvaluationConfig, seed: int = 42, compute: ComputeConfig | None = None,
                   cv_scores: tuple[float, ...] | None = None) -> Evaluation:
    """Score `model` on the holdout, cross-validate its recipe on the train split, draw plots.
    With `compute.backend == "ray"` the CV folds and the permutation importance run as Ray
    tasks; the numbers are the same as on the local backend. `cv_scores`: the fold scores
    model selection already has for this model on these folds
    (`ModelSelection.picked_cv_scores`), used instead of refitting them."""
    y = holdout[target].to_numpy()
    proba = model.predict_proba(holdout[spec.columns])[:, 1]
    return evaluate_scores(model, y, proba, train, holdout, target, spec, config, seed, compute, cv_scores)


def evaluate_scores(model, y: np.ndarray, proba: np.ndarray, train: pd.DataFrame, holdout: pd.DataFrame, target: str,
                    spec: FeatureSpec, config: EvaluationConfig, seed: int = 42, compute: ComputeConfig | None = None,
                    cv_scores: tuple[float, ...] | None = None, cv_model=None) -> Evaluation:
    """`evaluate_model` from the holdout's labels `y` and scores `proba` (all its rows, scored
    here or block by block elsewhere); the CV (of `cv_model`, default `model`) and the
    permutation importance run on bounded samples of `train` and `holdout` (which may be
    samples already)."""
    on_ray = compute is not None and compute.backend == "ray"
    run_tasks = partial(ray_cluster.run_tasks, max_retries=compute.max_retries) if on_ray else None
    metrics = classification_metrics(y, proba, config.threshold)

    # CV and permutation importance estimate spread and ranking, which a bounded sample gives as
    # well as the whole table: above the bounds they cost many times the fit itself.
    cv_rows = stratified_sample(train, target, config.cv_max_rows, seed)
    importance_rows = stratified_sample(holdout, target, config.importance_max_rows, seed)
    reused_cv = cv_scores is not None
    if cv_scores is None:
        cv_scores = fold_scores(cv_model if cv_model is not None else model, cv_rows[spec.columns],
                                cv_rows[target].to_numpy(), config.cv_folds, seed, run_tasks)
    cv = np.asarray(cv_scores)
    metrics["cv_roc_auc_mean"] = float(cv.mean())
    metrics["cv_roc_auc_std"] = float(cv.std())

    labels = (proba >= config.threshold).astype(int)
    confusion = confusion_matrix(y, labels, labels=[0, 1])
    importance = column_importances(model, importance_rows[spec.columns], importance_rows[target].to_numpy(),
                                    config.permutation_repeats, seed, run_tasks)
    importances = dict(sorted(zip(spec.columns, importance),
                              key=lambda kv: -kv[1]))

    plots = evaluation_plots(y, proba, metrics, confusion, importances, config.threshold, len(importance_rows))
    tags = ray_cluster.ray_session_tags() if on_ray else {}
    if reused_cv:
        tags["mlpipe.cv_source"] = "model selection's folds (same model, rows and folds; not refitted)"
    return Evaluation(metrics=metrics, confusion=confusion.tolist(), importances=importances, plots=plots,
                      sample_rows={"cv": len(cv_rows), "importance": len(importance_rows)}, tags=tags)


def evaluation_plots(y: np.ndarray, proba: np.ndarray, metrics: dict[str, float], confusion: np.ndarray,
                     importances: dict[str, float], threshold: float, importance_rows: int) -> dict[str, bytes]:
    """The holdout's plots as PNG bytes: ROC, precision-recall, calibration, the confusion
    matrix and the top 20 permutation importances."""
    plots: dict[str, bytes] = {}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    RocCurveDisplay.from_predictions(y, proba, ax=ax, name="holdout")
    ax.set_title(f"ROC (AUC {metrics['roc_auc']:.3f})")
    plots["roc_curve"] = figure_png(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    PrecisionRecallDisplay.from_predictions(y, proba, ax=ax, name="holdout")
    ax.set_title(f"Precision-recall (AP {metrics['pr_auc']:.3f})")
    plots["pr_curve"] = figure_png(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    CalibrationDisplay.from_predictions(y, proba, n_bins=10, ax=ax, name="holdout")
    ax.set_title(f"Calibration (Brier {metrics['brier']:.3f})")
    plots["calibration"] = figure_png(fig)
    fig, ax = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay(confusion, display_labels=["0", "1"]).plot(ax=ax, colorbar=False)
    ax.set_title(f"Confusion matrix (threshold {threshold})")
    plots["confusion_matrix"] = figure_png(fig)
    top = list(importances.items())[:20][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(top) + 1.2))
    ax.barh([k for k, _ in top], [v for _, v in top])
    ax.set_xlabel("mean drop in roc_auc when shuffled")
    ax.set_title(f"Permutation importance ({importance_rows:,} holdout rows)")
    plots["permutation_importance"] = figure_png(fig)
    return plots
