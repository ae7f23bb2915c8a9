"""mlpipe.compute.permutation: shuffled copies of a raw column scored from the holdout's feature matrix,
computed once, give the very probabilities (and so importances) the whole model gives."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlpipe.compute.evaluation_units import column_importance, column_importances, shuffle_orders
from mlpipe.compute.permutation import HoldoutFeatures, _outputs_by_input
from mlpipe.core.config import BucketFeature, ChangeFeature, FeaturesConfig, RatioFeature
from mlpipe.model.features import FeatureSpec, build_preprocessor, model_pipeline

SPEC = FeatureSpec(numeric=("tenure", "charges", "minutes", "prev_minutes", "total"),
                   categorical=("contract", "paperless", "region"))


def _raw(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows as they stand in a file: gaps everywhere, an int column, numbers stored as text
    with blanks, a True/False column with gaps, a rare category."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, rows)
    charges = rng.gamma(2.0, 40.0, rows)
    charges[rng.random(rows) < 0.1] = np.nan
    minutes = rng.gamma(3.0, 100.0, rows)
    prev = minutes * rng.uniform(0.5, 1.5, rows)
    prev[rng.random(rows) < 0.05] = 0.0
    total = np.where(rng.random(rows) < 0.05, " ", (tenure * np.nan_to_num(charges, nan=50.0)).round(2).astype(str))
    contract = rng.choice(["month", "year", "two", "rare"], rows, p=[0.5, 0.3, 0.19, 0.01]).astype(object)
    contract[rng.random(rows) < 0.1] = None
    paperless = rng.choice([True, False], rows).astype(object)
    paperless[rng.random(rows) < 0.1] = None
    region = rng.choice(["north", "south", "east", "west"], rows).astype(object)
    logit = -0.04 * tenure + 0.01 * np.nan_to_num(charges) + 1.2 * (contract == "month") - 0.002 * (prev - minutes)
    y = (logit + rng.logistic(size=rows) > 0.3).astype(int)
    frame = pd.DataFrame({"tenure": tenure, "charges": charges, "minutes": minutes, "prev_minutes": prev,
                          "total": pd.Series(total, dtype="str"), "contract": pd.Series(contract, dtype="str"),
                          "paperless": paperless, "region": pd.Series(region, dtype="str")})
    return frame, y


CONFIGS = {
    "default": FeaturesConfig(),
    "derived": FeaturesConfig(
        ratios=[RatioFeature(name="charge_rate", numerator="charges", denominator="tenure")],
        changes=[ChangeFeature(name="minutes_drop", previous="prev_minutes", current="minutes")],
        buckets=[BucketFeature(name="tenure_bucket", column="tenure", edges=[12, 24, 48])]),
    "plain": FeaturesConfig(scale_numeric=False, missing_indicators=False, max_categories=None,
                            min_category_frequency=None),
    "grouped": FeaturesConfig(max_categories=2, min_category_frequency=0.05),
}


def _fitted(config: FeaturesConfig, estimator):
    train, y = _raw(600, 1)
    return model_pipeline(SPEC, build_preprocessor(SPEC, config), estimator).fit(train, y)


def _holdout() -> tuple[pd.DataFrame, np.ndarray]:
    holdout, y = _raw(300, 2)
    holdout.loc[5, "region"] = "never-seen"  # unknown to the encoder
    return holdout, y


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
@pytest.mark.parametrize("estimator", [LogisticRegression(max_iter=500), HistGradientBoostingClassifier(max_iter=20)],
                         ids=["logistic", "trees"])
def test_shuffled_copies_from_the_feature_matrix_score_as_the_whole_model(config, estimator):
    model = _fitted(CONFIGS[config], estimator)
    X, y = _holdout()
    features = HoldoutFeatures.of(model, X)
    assert features is not None
    np.testing.assert_array_equal(features.baseline(), model.predict_proba(X)[:, 1])
    orders = shuffle_orders(len(X), 3, 11)
    for column in X.columns:
        stacked = pd.concat([X] * 3, ignore_index=True)
        stacked[column] = pd.Series(np.concatenate([X[column].to_numpy()[o] for o in orders]), dtype=X[column].dtype)
        np.testing.assert_array_equal(features.proba(column, orders), model.predict_proba(stacked)[:, 1],
                                      err_msg=column)
    fast = column_importances(model, X, y, 3, 11)
    assert fast == [column_importance(j, model, X, y, 3, 11) for j in range(X.shape[1])]  # through the whole model
    assert max(fast) > 0.02


def test_importances_equal_sklearn_permutation_importance_on_a_registered_model():
    model = _fitted(CONFIGS["derived"], LogisticRegression(max_iter=500))
    X, y = _holdout()
    expected = permutation_importance(model, X, y, scoring="roc_auc", n_repeats=4, random_state=5,
                                      n_jobs=1).importances_mean
    np.testing.assert_allclose(column_importances(model, X, y, 4, 5), expected, rtol=0, atol=1e-12)


def test_only_column_wise_blocks_move_rows_others_are_recomputed():
    model = _fitted(CONFIGS["derived"], LogisticRegression(max_iter=500))
    features = HoldoutFeatures.of(model, _holdout()[0])
    moved = {tuple(columns): outputs is not None for _, columns, _, outputs in features.blocks}
    assert moved == {SPEC.numeric: True, SPEC.categorical: True, ("charges", "tenure"): False,
                     ("minutes", "prev_minutes"): False, ("tenure",): True}


@pytest.mark.parametrize("block", [
    make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()),
    SimpleImputer(strategy="mean", add_indicator=True, keep_empty_features=True),
    SimpleImputer(strategy="median"),
    OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=3, sparse_output=False),
    OneHotEncoder(handle_unknown="ignore", drop="first", sparse_output=False),
])
def test_each_input_column_owns_the_outputs_it_is_said_to(block):
    """Shuffling input k moves the rows of exactly the outputs `_outputs_by_input` gives it,
    and no others, here with a column that is empty in fit (the imputer drops it unless told
    to keep it) and columns with and without gaps."""
    rng = np.random.default_rng(0)
    rows = 200
    if isinstance(block, OneHotEncoder):
        X = rng.choice(list("abcde"), (rows, 3)).astype(object)
        X[:, 1] = rng.choice(["x", "y"], rows)
    else:
        X = rng.normal(size=(rows, 4))
        X[rng.random(rows) < 0.2, 0] = np.nan
        X[:, 2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the imputer warns that it skips the empty column
        out = block.fit(X).transform(X)
        outputs = _outputs_by_input(block, X.shape[1])
        assert sorted(np.concatenate(outputs)) == list(range(out.shape[1]))
        order = rng.permutation(rows)
        for k in range(X.shape[1]):
            shuffled = X.copy()
            shuffled[:, k] = X[order, k]
            expected = out.copy()
            expected[:, outputs[k]] = out[order][:, outputs[k]]
            np.testing.assert_array_equal(block.transform(shuffled), expected, err_msg=f"input {k}")


def test_models_of_other_shapes_are_scored_through_the_whole_model():
    X, y = _holdout()
    numeric = X[list(SPEC.numeric[:4])]
    plain = make_pipeline(SimpleImputer(), LogisticRegression()).fit(numeric, y)
    assert HoldoutFeatures.of(plain, numeric) is None
    sparse_features = ColumnTransformer([("categorical", OneHotEncoder(handle_unknown="ignore"), ["region"])], sparse_threshold=1.0)
    model = model_pipeline(SPEC, sparse_features, LogisticRegression()).fit(*_raw(300, 1))
    assert HoldoutFeatures.of(model, X) is None
    assert column_importances(model, X, y, 2, 0) == [column_importance(j, model, X, y, 2, 0)
                                                     for j in range(X.shape[1])]
