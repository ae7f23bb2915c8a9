"""The xgboost and lightgbm families: the wrapped boosters fit, predict what the library's own
booster predicts, save with skops as the library's model format (no pickle), take their thread
count from `compute.threads`, and check their parameters at config load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mlpipe.compute.evaluation_units import estimator_threads
from mlpipe.core.families import check_model_params, default_candidates, family_names, make_estimator
from mlpipe.model.boosters import LightGBMClassifier, XGBoostClassifier

FAMILIES = {"xgboost": XGBoostClassifier, "lightgbm": LightGBMClassifier}


def _data(n: int = 800, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    X[rng.random(size=X.shape) < 0.05] = np.nan  # gaps: both libraries route missing values themselves
    y = (np.nan_to_num(X[:, 0]) - np.nan_to_num(X[:, 1]) + rng.normal(0, 0.7, n) > 0)
    return X, np.where(y, "Yes", "No")


def _library_positive(model, X) -> np.ndarray:
    """The positive-class probability from the library's own booster, built from the saved model."""
    if isinstance(model, XGBoostClassifier):
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(bytearray(model.booster_))
        return booster.predict(xgboost.DMatrix(X))
    import lightgbm

    return lightgbm.Booster(model_str=model.booster_).predict(X)


def test_both_families_are_registered_but_not_yet_auto_candidates():
    assert {"xgboost", "lightgbm"} <= set(family_names())
    assert not {"xgboost", "lightgbm"} & set(default_candidates())
    assert isinstance(make_estimator("xgboost", {"max_depth": 3}, seed=7), XGBoostClassifier)
    assert make_estimator("lightgbm", {}, seed=7).random_state == 7


@pytest.mark.parametrize("family", FAMILIES)
def test_a_fitted_booster_predicts_what_the_library_predicts_and_round_trips_through_skops(family):
    from mlpipe.adapters.mlflow.models import skops_io, trusted_types

    X, y = _data()
    model = make_estimator(family, {"n_estimators": 40, "n_jobs": 1}, seed=3).fit(X[:600], y[:600])
    assert list(model.classes_) == ["No", "Yes"] and model.best_iteration_ == 39
    proba = model.predict_proba(X[600:])
    assert roc_auc_score(y[600:] == "Yes", proba[:, 1]) > 0.8
    np.testing.assert_allclose(proba[:, 1], _library_positive(model, X[600:]), rtol=0, atol=1e-6)
    assert set(model.predict(X[600:])) <= {"No", "Yes"}

    io = skops_io()
    assert trusted_types(model) == [f"mlpipe.model.boosters.{type(model).__name__}"]  # no library type, no pickle
    saved = io.dumps(model)  # after a predict: the live booster it cached is not saved
    loaded = io.loads(saved, trusted=trusted_types(model))
    np.testing.assert_array_equal(loaded.predict_proba(X[600:]), proba)
    refit = make_estimator(family, {"n_estimators": 40, "n_jobs": 1}, seed=3).fit(X[:600], y[:600])
    assert refit.booster_ == model.booster_  # seeded: the same trees


@pytest.mark.parametrize("family", FAMILIES)
def test_early_stopping_keeps_the_rounds_up_to_the_best_on_the_validation_share(family):
    X, y = _data()
    model = make_estimator(family, {"n_estimators": 400, "learning_rate": 0.3, "early_stopping_rounds": 5,
                                    "n_jobs": 1}, seed=0).fit(X, y)
    assert model.best_iteration_ < 399
    if family == "xgboost":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(bytearray(model.booster_))
        assert booster.num_boosted_rounds() == model.best_iteration_ + 1
    else:
        import lightgbm

        assert lightgbm.Booster(model_str=model.booster_).num_trees() == model.best_iteration_ + 1


def test_compute_threads_reaches_both_libraries():
    """`compute.threads` (estimator_threads) caps the boosters as it caps HistGradientBoosting."""
    import lightgbm
    import xgboost

    X, y = _data(300)
    with estimator_threads(1):
        xgb = XGBoostClassifier(n_estimators=5).fit(X, y)
        lgb = LightGBMClassifier(n_estimators=5).fit(X, y)
        assert XGBoostClassifier().booster_params(1)["nthread"] == 1
    booster = xgboost.Booster()
    booster.load_model(bytearray(xgb.booster_))
    assert "[num_threads: 1]" in lgb.booster_  # LightGBM writes the parameters it trained with
    assert "nthread" not in XGBoostClassifier().booster_params(None)  # no cap: XGBoost's own default
    assert LightGBMClassifier().booster_params(None)["num_threads"] == 0  # LightGBM's default: OpenMP's
    assert json.loads(booster.save_config())["learner"]["objective"]["name"] == "binary:logistic"
    assert lightgbm.Booster(model_str=lgb.booster_).num_trees() == 5


@pytest.mark.parametrize("family, key, value", [("xgboost", "learning_rate", 0.0), ("xgboost", "max_depth", -1),
                                                ("lightgbm", "num_leaves", 1), ("lightgbm", "subsample", 1.5)])
def test_bad_booster_params_fail_at_config_check_naming_the_key(family, key, value):
    with pytest.raises(ValueError, match=rf"model\.params\.{family}\.{key}"):
        check_model_params(family, {key: value})
    with pytest.raises(ValueError, match=rf"model\.params\.{family}\.eta is not a parameter"):
        check_model_params(family, {"eta": 0.1})


def test_a_one_class_target_is_refused():
    X, _ = _data(50)
    with pytest.raises(ValueError, match="binary"):
        XGBoostClassifier(n_estimators=2).fit(X, np.ones(50))


def test_use_gpu_trains_xgboost_on_cuda_and_is_a_checked_param():
    """`model.params.xgboost.use_gpu: true` is XGBoost's device="cuda" (benchmarks/gpu.py runs it on
    a GPU box); the saved model predicts on the CPU wherever it loads."""
    assert XGBoostClassifier(use_gpu=True).booster_params(None)["device"] == "cuda"
    assert XGBoostClassifier().booster_params(None)["device"] == "cpu"
    check_model_params("xgboost", {"use_gpu": True})
    with pytest.raises(ValueError, match=r"model\.params\.xgboost\.use_gpu"):
        check_model_params("xgboost", {"use_gpu": "yes"})


def test_num_workers_is_a_checked_param():
    with pytest.raises(ValueError, match=r"model\.params\.xgboost\.num_workers"):
        check_model_params("xgboost", {"num_workers": -1})
