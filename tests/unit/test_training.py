"""tasks.training: seeded, deterministic fits for every family; parameter checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tasks.config import MODEL_FAMILIES, BucketFeature, FeaturesConfig, ModelConfig, RatioFeature
from tasks.features import build_preprocessor, feature_spec
from tasks.training import build_estimator, check_model_params, fit_model

# Small models: determinism does not need many trees, and the suite must stay fast.
SMALL = {
    "logistic_regression": {"C": 0.5},
    "random_forest": {"n_estimators": 15, "min_samples_leaf": 2},
    "hist_gradient_boosting": {"max_iter": 15},
    "mlp": {"num_workers": 0, "epochs": 3, "hidden_layers": [8]},  # in-process torch: no Ray start-up
}


def _data(n: int = 80) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "tenure": rng.integers(0, 60, n).astype(float),
        "charges": rng.normal(50, 15, n),
        "contract": pd.Series(rng.choice(["month", "year", "two"], n), dtype="str"),
    })
    frame.loc[::7, "charges"] = np.nan
    score = -0.05 * frame["tenure"] + 0.03 * frame["charges"].fillna(50) + (frame["contract"] == "month")
    frame["churn"] = (score + rng.normal(0, 0.5, n) > score.median()).astype(int)
    return frame


def _fit_inputs():
    config = FeaturesConfig(
        ratios=[RatioFeature(name="rate", numerator="charges", denominator="tenure")],
        buckets=[BucketFeature(name="tb", column="tenure", edges=[12, 24])],
    )
    spec = feature_spec(["tenure", "charges"], ["contract"], config)
    return spec, build_preprocessor(spec, config)


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_fit_model_is_deterministic(family):
    if family == "mlp":
        pytest.importorskip("torch", reason="the mlp family needs the torch extra")
    frame = _data()
    spec, preprocessor = _fit_inputs()
    config = ModelConfig(family=family, params={family: SMALL[family]}, seed=7)
    first = fit_model(frame, "churn", spec, preprocessor, config)
    second = fit_model(frame, "churn", spec, preprocessor, config)
    assert isinstance(first, Pipeline)
    proba = first.predict_proba(frame[spec.columns])
    assert proba.shape == (len(frame), 2)
    np.testing.assert_array_equal(proba, second.predict_proba(frame[spec.columns]))
    assert proba[:, 1].min() < proba[:, 1].max()  # it learned something, not a constant


def test_fit_model_leaves_the_preprocessor_unfitted():
    frame = _data()
    spec, preprocessor = _fit_inputs()
    fit_model(frame, "churn", spec, preprocessor, ModelConfig(family="logistic_regression"))
    assert not hasattr(preprocessor, "transformers_")  # cloned, not fitted in place


def test_seed_changes_a_random_forest():
    frame = _data()
    spec, preprocessor = _fit_inputs()
    params = {"random_forest": {"n_estimators": 5, "max_features": 1}}
    a = fit_model(frame, "churn", spec, preprocessor, ModelConfig(family="random_forest", params=params, seed=1))
    b = fit_model(frame, "churn", spec, preprocessor, ModelConfig(family="random_forest", params=params, seed=2))
    assert not np.array_equal(a.predict_proba(frame[spec.columns]), b.predict_proba(frame[spec.columns]))


@pytest.mark.parametrize(("family", "cls"), [
    ("logistic_regression", LogisticRegression),
    ("random_forest", RandomForestClassifier),
    ("hist_gradient_boosting", HistGradientBoostingClassifier),
])
def test_build_estimator_applies_seed_and_params(family, cls):
    estimator = build_estimator(ModelConfig(family=family, params={family: SMALL[family]}, seed=123))
    assert isinstance(estimator, cls)
    assert estimator.get_params()["random_state"] == 123
    for key, value in SMALL[family].items():
        assert estimator.get_params()[key] == value


def test_build_estimator_defaults_and_explicit_random_state():
    estimator = build_estimator(ModelConfig(family="hist_gradient_boosting", seed=5))
    assert estimator.early_stopping is False  # pipeline default, not sklearn's "auto"
    assert estimator.random_state == 5
    explicit = build_estimator(ModelConfig(family="random_forest", seed=5,
                                           params={"random_forest": {"random_state": 9}}))
    assert explicit.random_state == 9


def test_check_model_params_rejects_unknown_param():
    with pytest.raises(ValueError, match=r"model\.params\.random_forest\.n_trees is not a parameter") as info:
        check_model_params("random_forest", {"n_trees": 3, "n_estimators": 10})
    assert "n_estimators" in str(info.value).split("allowed:")[1]


def test_check_model_params_rejects_invalid_value():
    with pytest.raises(ValueError, match=r"model\.params\.logistic_regression") as info:
        check_model_params("logistic_regression", {"C": -1.0})
    assert "'C'" in str(info.value)


def test_check_model_params_rejects_unknown_family():
    with pytest.raises(ValueError, match="xgboost"):
        check_model_params("xgboost", {})


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_check_model_params_accepts_valid(family):
    assert check_model_params(family, SMALL[family]) is None
