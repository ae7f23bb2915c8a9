"""mlpipe.core.families: the estimator families model selection, tuning and config draw on."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import VotingClassifier

from mlpipe.core import families
from mlpipe.core.families import (
    check_model_params,
    default_candidates,
    family_names,
    get_family,
    make_blend,
    make_estimator,
    register_family,
)


@pytest.fixture
def registry(monkeypatch):
    """The registry as it is, restored after the test."""
    monkeypatch.setattr(families, "_FAMILIES", dict(families._FAMILIES))
    return families._FAMILIES


def test_families_are_listed_simplest_first_and_mlp_is_not_a_default_candidate():
    assert family_names()[:6] == ["logistic_regression", "hist_gradient_boosting", "random_forest", "xgboost",
                                  "lightgbm", "mlp"]
    assert "mlp" in family_names() and "mlp" not in default_candidates()
    assert default_candidates() == ["logistic_regression", "hist_gradient_boosting", "random_forest"]


def test_a_registered_family_joins_the_candidates_in_its_simplicity_order(registry):
    register_family("dummy", DummyClassifier, {"strategy": "prior"}, simplicity=5)
    assert family_names()[0] == "dummy" and default_candidates()[0] == "dummy"
    estimator = make_estimator("dummy", {}, seed=3)
    assert isinstance(estimator, DummyClassifier) and estimator.strategy == "prior" and estimator.random_state == 3
    with pytest.raises(ValueError, match="already registered"):
        register_family("dummy", DummyClassifier)
    register_family("dummy", DummyClassifier, candidate=False, replace=True)
    assert "dummy" not in default_candidates()
    for reserved in ("auto", "soft_voting"):
        with pytest.raises(ValueError, match="reserved"):
            register_family(reserved, DummyClassifier)


def test_estimator_params_merge_defaults_then_config_and_keep_an_explicit_seed():
    model = make_estimator("random_forest", {"n_estimators": 7, "random_state": 11}, seed=3)
    assert (model.n_estimators, model.min_samples_leaf, model.random_state) == (7, 3, 11)
    assert make_estimator("logistic_regression", {}, seed=3).max_iter == 2000


def test_unknown_family_and_bad_params_name_the_key():
    with pytest.raises(ValueError, match="'xgb' is unknown .allowed: auto, logistic_regression"):
        get_family("xgb")
    with pytest.raises(ValueError, match="model.params.random_forest.n_trees is not a parameter"):
        check_model_params("random_forest", {"n_trees": 3})
    with pytest.raises(ValueError, match="model.params.random_forest.n_estimators"):
        check_model_params("random_forest", {"n_estimators": -1})
    check_model_params("random_forest", {"n_estimators": 5})  # a valid value passes


def test_a_blend_averages_its_members_probabilities():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(120, 3)), rng.integers(0, 2, 120)
    blend = make_blend(["logistic_regression", "random_forest"], {"random_forest": {"n_estimators": 10}}, seed=1)
    assert isinstance(blend, VotingClassifier) and blend.voting == "soft"
    blend.fit(X, y)
    members = [est.predict_proba(X) for est in blend.estimators_]
    np.testing.assert_allclose(blend.predict_proba(X), np.mean(members, axis=0))
