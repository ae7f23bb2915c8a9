"""tasks.evaluation: holdout metrics, CV and permutation importance (on bounded samples), plots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mlpipe.core.config import EvaluationConfig, FeaturesConfig
from mlpipe.core.metrics import classification_metrics
from mlpipe.data.splitting import stratified_sample
from mlpipe.model.features import build_preprocessor, feature_spec, model_pipeline
from mlpipe.stages.evaluation import evaluate_model


def _data(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "tenure": rng.integers(0, 60, n).astype(float),
        "noise": rng.normal(0, 1, n),
        "contract": pd.Series(rng.choice(["month", "year"], n), dtype="str"),
    })
    logit = -0.08 * frame["tenure"] + 1.5 * (frame["contract"] == "month")
    frame["churn"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


@pytest.fixture(scope="module")
def fitted():
    spec = feature_spec(["tenure", "noise"], ["contract"], FeaturesConfig())
    model = model_pipeline(spec, build_preprocessor(spec, FeaturesConfig()), LogisticRegression())
    train, holdout = _data(600), _data(300, seed=1)
    return model.fit(train[spec.columns], train["churn"]), train, holdout, spec


def test_stratified_sample_copies_only_the_sampled_rows():
    """The same rows, in the same order, as scikit-learn's split of the frame itself, without
    the copy of every row left out that splitting the frame makes (numpy's arrays are traced
    by tracemalloc)."""
    import tracemalloc

    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.normal(size=(200_000, 40)), columns=[f"x{i}" for i in range(40)],
                         index=rng.permutation(200_000) + 5)
    frame["churn"] = (rng.random(200_000) < 0.27).astype("int64")
    tracemalloc.start()
    try:
        sample = stratified_sample(frame, "churn", 2_000, seed=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    expected, _ = train_test_split(frame, train_size=2_000, random_state=3, stratify=frame["churn"])
    pd.testing.assert_frame_equal(sample, expected)
    assert peak < frame.memory_usage().sum() / 2  # splitting the frame: the whole frame more (65 MB)


def test_stratified_sample_keeps_class_shares_and_is_seeded():
    frame = _data(1000)
    sample = stratified_sample(frame, "churn", 200, seed=3)
    assert len(sample) == 200
    assert sample["churn"].mean() == pytest.approx(frame["churn"].mean(), abs=0.01)
    assert sample.index.equals(stratified_sample(frame, "churn", 200, seed=3).index)
    assert stratified_sample(frame, "churn", None) is frame and stratified_sample(frame, "churn", 5000) is frame


def test_evaluate_model_scores_the_holdout_and_ranks_the_informative_columns(fitted):
    model, train, holdout, spec = fitted
    config = EvaluationConfig(cv_folds=3, permutation_repeats=3, threshold=0.4)
    evaluation = evaluate_model(model, train, holdout, "churn", spec, config, seed=1)

    proba = model.predict_proba(holdout[spec.columns])[:, 1]
    expected = classification_metrics(holdout["churn"].to_numpy(), proba, 0.4)
    assert {k: evaluation.metrics[k] for k in expected} == pytest.approx(expected)
    assert 0.6 < evaluation.metrics["cv_roc_auc_mean"] <= 1 and evaluation.metrics["cv_roc_auc_std"] >= 0
    assert np.sum(evaluation.confusion) == len(holdout)
    assert list(evaluation.importances)[-1] == "noise"  # sorted, the column without signal last
    assert set(evaluation.importances) == set(spec.columns)
    assert {"roc_curve", "pr_curve", "calibration", "confusion_matrix", "permutation_importance"} == set(
        evaluation.plots)
    assert all(png.startswith(b"\x89PNG") for png in evaluation.plots.values())
    assert evaluation.sample_rows == {"cv": 600, "importance": 300}


def test_cv_and_importance_run_on_bounded_samples(fitted):
    model, train, holdout, spec = fitted
    bounded = EvaluationConfig(cv_folds=3, permutation_repeats=2, cv_max_rows=200, importance_max_rows=150)
    evaluation = evaluate_model(model, train, holdout, "churn", spec, bounded)
    assert evaluation.sample_rows == {"cv": 200, "importance": 150}
    whole = evaluate_model(model, train, holdout, "churn", spec, bounded.model_copy(
        update={"cv_max_rows": None, "importance_max_rows": None}))
    assert evaluation.metrics["roc_auc"] == whole.metrics["roc_auc"]  # the holdout score is never sampled
    assert evaluation.metrics["cv_roc_auc_mean"] != whole.metrics["cv_roc_auc_mean"]
