"""mlpipe.model.features: the custom transformers pass sklearn's estimator checks; the assembled
ColumnTransformer copes with missing values, unseen categories and pandas 3 `str` columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from mlpipe.core.config import BucketFeature, ChangeFeature, FeaturesConfig, RatioFeature
from mlpipe.data.validation import DataValidationError
from mlpipe.model.features import Bucketizer, FeatureSpec, RelativeChange, SafeRatio, build_preprocessor, feature_spec


# Every check applies and passes, so no `expected_failed_checks` are declared: a check that
# starts failing is a regression, not something to silence.
@parametrize_with_checks([SafeRatio(), RelativeChange(), Bucketizer(edges=(0.0, 1.0))])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- SafeRatio ---------------------------------------------------------------------------------

def test_safe_ratio_values():
    X = np.array([[6.0, 3.0], [1.0, 0.0], [2.0, np.nan], [np.nan, 2.0], [5.0, -2.0], [0.0, 0.0], [0.0, 4.0]])
    out = SafeRatio().fit_transform(X)
    assert out.shape == (7, 1)
    assert not np.isinf(out).any()
    np.testing.assert_array_equal(np.isnan(out[:, 0]), [False, True, True, True, False, True, False])
    assert out[0, 0] == 2.0 and out[4, 0] == -2.5 and out[6, 0] == 0.0


def test_safe_ratio_several_numerators_share_the_last_column():
    X = np.array([[2.0, 9.0, 4.0], [1.0, 1.0, 0.0]])
    ratio = SafeRatio().fit(X)
    out = ratio.transform(X)
    np.testing.assert_allclose(out[0], [0.5, 2.25])
    assert np.isnan(out[1]).all()
    assert list(ratio.get_feature_names_out(["a", "b", "c"])) == ["a_per_c", "b_per_c"]


def test_safe_ratio_feature_names_from_frame():
    frame = pd.DataFrame({"charges": [10.0, 20.0], "tenure": [2.0, 0.0]})
    ratio = SafeRatio().fit(frame)
    assert list(ratio.get_feature_names_out()) == ["charges_per_tenure"]
    out = ratio.transform(frame)
    assert out[0, 0] == 5.0 and np.isnan(out[1, 0])


def test_safe_ratio_needs_two_columns():
    with pytest.raises(ValueError):
        SafeRatio().fit(np.array([[1.0], [2.0]]))


# -- RelativeChange ----------------------------------------------------------------------------

def test_relative_change_values_and_zero_safe_denominator():
    # columns: (current, previous); the change is (previous - current) / previous
    X = np.array([[75.0, 100.0], [120.0, 100.0], [5.0, 0.0], [5.0, np.nan], [np.nan, 10.0], [0.0, 8.0]])
    out = RelativeChange().fit_transform(X)
    assert out.shape == (6, 1) and not np.isinf(out).any()
    assert out[0, 0] == 0.25 and out[1, 0] == -0.2 and out[5, 0] == 1.0
    assert np.isnan(out[2:5, 0]).all()  # previous 0 or missing, current missing: unknown, not inf


def test_relative_change_feature_names():
    frame = pd.DataFrame({"current": [1.0, 2.0], "previous": [2.0, 2.0]})
    change = RelativeChange().fit(frame)
    assert list(change.get_feature_names_out()) == ["drop_previous_to_current"]
    np.testing.assert_allclose(change.transform(frame)[:, 0], [0.5, 0.0])


# -- Bucketizer --------------------------------------------------------------------------------

def test_bucketizer_buckets_by_edges_and_nan_gets_its_own_bucket():
    X = np.array([[-1.0], [0.0], [0.5], [1.0], [2.0], [np.nan]])
    out = Bucketizer(edges=(0.0, 1.0)).fit_transform(X)
    # below 0 -> 0; [0, 1) -> 1; >= 1 -> 2; missing -> len(edges) + 1 = 3
    assert out[:, 0].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 3.0]


def test_bucketizer_single_edge_and_columns_independent():
    X = np.array([[5.0, 50.0], [15.0, np.nan]])
    out = Bucketizer(edges=(10.0,)).fit_transform(X)
    assert out.tolist() == [[0.0, 1.0], [1.0, 2.0]]  # nan -> len(edges) + 1 = 2


@pytest.mark.parametrize("edges", [(), (1.0, 1.0), (2.0, 1.0)])
def test_bucketizer_rejects_bad_edges(edges):
    with pytest.raises(ValueError, match="strictly increasing"):
        Bucketizer(edges=edges).fit(np.array([[1.0], [2.0]]))


# -- build_preprocessor --------------------------------------------------------------------------

def _config(**kwargs) -> FeaturesConfig:
    return FeaturesConfig(
        ratios=[RatioFeature(name="charge_rate", numerator="charges", denominator="tenure")],
        buckets=[BucketFeature(name="tenure_bucket", column="tenure", edges=[12, 24])],
        **kwargs,
    )


def _train() -> pd.DataFrame:
    return pd.DataFrame({
        "tenure": [1.0, 13.0, 0.0, 30.0, np.nan, 5.0],
        "charges": [10.0, 130.0, 5.0, np.nan, 20.0, 50.0],
        "contract": pd.Series(["month", "year", "month", None, "year", "two"], dtype="str"),
    })


SPEC = FeatureSpec(numeric=("tenure", "charges"), categorical=("contract",))


def test_preprocessor_output_is_finite():
    frame = _train()
    assert isinstance(frame["contract"].dtype, pd.StringDtype)
    preprocessor = build_preprocessor(SPEC, _config())
    out = preprocessor.fit_transform(frame[SPEC.columns])
    assert out.shape[0] == 6
    assert np.isfinite(out).all()
    names = list(preprocessor.get_feature_names_out())
    assert out.shape[1] == len(names)
    assert "charge_rate__charges_per_tenure" in names
    assert "numeric__tenure" in names
    assert any(n.startswith("categorical__contract_") for n in names)
    assert any(n.startswith("tenure_bucket__") for n in names)


def test_preprocessor_ignores_unknown_categories():
    preprocessor = build_preprocessor(SPEC, _config()).fit(_train()[SPEC.columns])
    new = pd.DataFrame({"tenure": [3.0], "charges": [4.0],
                        "contract": pd.Series(["never-seen"], dtype="str")})
    out = preprocessor.transform(new)
    assert out.shape == (1, len(preprocessor.get_feature_names_out()))
    assert np.isfinite(out).all()


@pytest.mark.parametrize("max_categories", [None, 30])
def test_preprocessor_categorical_with_none_and_nan(max_categories):
    frame = _train()
    frame["contract"] = pd.Series(["month", None, "year", np.nan, "month", "year"], dtype=object)
    preprocessor = build_preprocessor(SPEC, _config(max_categories=max_categories))
    out = preprocessor.fit_transform(frame[SPEC.columns])
    assert np.isfinite(out).all()
    names = list(preprocessor.get_feature_names_out())
    contract = [i for i, n in enumerate(names) if n.startswith("categorical__contract_")]
    # month, year and one shared "missing" category for both None and NaN
    assert len(contract) == 3
    block = out[:, contract]
    assert (block.sum(axis=1) == 1).all()
    assert (block[1] == block[3]).all()  # None and NaN land in the same column


def test_preprocessor_numeric_only_and_categorical_only():
    frame = _train()
    numeric_only = build_preprocessor(FeatureSpec(("tenure", "charges"), ()), FeaturesConfig())
    assert np.isfinite(numeric_only.fit_transform(frame[["tenure", "charges"]])).all()
    categorical_only = build_preprocessor(FeatureSpec((), ("contract",)), FeaturesConfig())
    assert categorical_only.fit_transform(frame[["contract"]]).shape == (6, 4)


def test_preprocessor_without_scaling_keeps_values():
    preprocessor = build_preprocessor(FeatureSpec(("tenure",), ()), FeaturesConfig(scale_numeric=False))
    out = preprocessor.fit_transform(pd.DataFrame({"tenure": [1.0, np.nan, 3.0, 10.0]}))
    assert out[:, 0].tolist() == [1.0, 3.0, 3.0, 10.0]  # median imputation


def test_missing_category_encoding_does_not_depend_on_the_batch():
    preprocessor = build_preprocessor(FeatureSpec(("n",), ("contract",)), FeaturesConfig(scale_numeric=False))
    preprocessor.fit(pd.DataFrame({"n": [1.0, 2.0, 3.0, 4.0],
                                   "contract": pd.Series(["a", None, "b", None], dtype="str")}))
    alone = pd.DataFrame({"n": [1.0], "contract": pd.Series([None], dtype="str")})
    batch = pd.DataFrame({"n": [1.0, 1.0], "contract": pd.Series([None, "a-much-longer-value"], dtype="str")})
    np.testing.assert_array_equal(preprocessor.transform(alone)[0], preprocessor.transform(batch)[0])


def test_feature_spec_rejects_ratio_on_text_column():
    config = FeaturesConfig(ratios=[RatioFeature(name="r", numerator="charges", denominator="contract")])
    with pytest.raises(DataValidationError) as info:
        feature_spec(["charges"], ["contract"], config)
    assert info.value.column == "contract"
    assert "'r'" in str(info.value) and "holds text" in str(info.value)


def test_feature_spec_rejects_bucket_on_text_column():
    config = FeaturesConfig(buckets=[BucketFeature(name="b", column="contract", edges=[1.0])])
    with pytest.raises(DataValidationError) as info:
        feature_spec(["charges"], ["contract"], config)
    assert info.value.column == "contract"


def test_feature_spec_keeps_roles():
    spec = feature_spec(["tenure", "charges"], ["contract"], _config())
    assert spec == SPEC
    assert spec.columns == ["tenure", "charges", "contract"]


@pytest.mark.parametrize("config", [
    FeaturesConfig(ratios=[RatioFeature(name="r", numerator="charges", denominator="minutes")]),
    FeaturesConfig(buckets=[BucketFeature(name="b", column="age", edges=[18.0])]),
])
def test_build_preprocessor_rejects_unknown_column(config):
    with pytest.raises(DataValidationError) as info:
        build_preprocessor(SPEC, config)
    assert info.value.column in {"minutes", "age"}
    assert repr(info.value.column) in str(info.value)


def test_missing_indicators_only_for_numeric_columns_with_gaps():
    frame = _train()  # tenure and charges each have one gap
    frame["age"] = [30.0, 40.0, 50.0, 60.0, 70.0, 80.0]
    spec = FeatureSpec(("tenure", "charges", "age"), ())
    preprocessor = build_preprocessor(spec, FeaturesConfig(scale_numeric=False))
    out = preprocessor.fit_transform(frame[spec.columns])
    names = list(preprocessor.get_feature_names_out())
    assert names == ["numeric__tenure", "numeric__charges", "numeric__age",
                     "numeric__missingindicator_tenure", "numeric__missingindicator_charges"]
    assert out[:, 3].tolist() == [0, 0, 0, 0, 1, 0] and out[:, 4].tolist() == [0, 0, 0, 1, 0, 0]
    # a gap at prediction time in a column without gaps in training is imputed, no new column
    new = pd.DataFrame({"tenure": [2.0], "charges": [3.0], "age": [np.nan]})
    assert preprocessor.transform(new).tolist() == [[2.0, 3.0, 55.0, 0.0, 0.0]]
    plain = build_preprocessor(spec, FeaturesConfig(scale_numeric=False, missing_indicators=False))
    assert plain.fit_transform(frame[spec.columns]).shape == (6, 3)


def test_rare_categories_share_one_column():
    contract = ["month"] * 150 + ["year"] * 49 + ["weekly"]  # weekly: 1 row of 200 = 0.5%, below 1%
    frame = pd.DataFrame({"contract": pd.Series(contract, dtype="str")})
    spec = FeatureSpec((), ("contract",))
    grouped = build_preprocessor(spec, FeaturesConfig(min_category_frequency=0.01)).fit(frame)
    assert list(grouped.get_feature_names_out()) == ["categorical__contract_month", "categorical__contract_year",
                                                      "categorical__contract_infrequent_sklearn"]
    unseen = grouped.transform(pd.DataFrame({"contract": pd.Series(["daily"], dtype="str")}))
    assert unseen.tolist() == [[0.0, 0.0, 1.0]]  # unseen categories score like the rare ones
    kept = build_preprocessor(spec, FeaturesConfig(min_category_frequency=None, max_categories=None)).fit(frame)
    assert len(kept.get_feature_names_out()) == 3 and "categorical__contract_weekly" in kept.get_feature_names_out()


def test_build_preprocessor_rejects_change_on_unknown_column():
    config = FeaturesConfig(changes=[ChangeFeature(name="drop", previous="minutes", current="charges")])
    with pytest.raises(DataValidationError) as info:
        build_preprocessor(SPEC, config)
    assert info.value.column == "minutes"


def test_feature_spec_rejects_change_on_text_column():
    config = FeaturesConfig(changes=[ChangeFeature(name="drop", previous="contract", current="charges")])
    with pytest.raises(DataValidationError, match="'drop' needs numeric column 'contract'"):
        feature_spec(["charges"], ["contract"], config)


# -- the seed's four churn features (ChurnFeatureEngineer), as conf/churn.yaml configures them ----

# -- FeatureMatrix ------------------------------------------------------------------------------

def _stock(preprocessor):
    """The same blocks in scikit-learn's own ColumnTransformer, its encoders dense float64: what
    build_preprocessor made before FeatureMatrix."""
    from sklearn.base import clone
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    blocks = [(name, clone(block), columns) for name, block, columns in preprocessor.transformers]
    for _, block, _ in blocks:
        for _, step in getattr(block, "steps", []):
            if isinstance(step, OneHotEncoder):
                step.set_params(sparse_output=False, dtype=np.float64)
    return ColumnTransformer(blocks, remainder="drop", sparse_threshold=0.0, verbose_feature_names_out=True)


def _mixed(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 60, rows).astype(float)
    tenure[rng.random(rows) < 0.1] = np.nan
    charges = rng.gamma(2.0, 40.0, rows)
    charges[rng.random(rows) < 0.1] = np.nan
    contract = rng.choice(["month", "year", "two", "rare"], rows, p=[0.5, 0.3, 0.19, 0.01]).astype(object)
    contract[rng.random(rows) < 0.1] = None
    return pd.DataFrame({"tenure": tenure, "charges": charges, "contract": pd.Series(contract, dtype="str")})


@pytest.mark.parametrize("rows_per_slice, rows_per_pass", [(7, 65_536), (65_536, 64), (7, 64)])
def test_feature_matrix_is_the_stock_stacking_in_float32(monkeypatch, rows_per_slice, rows_per_pass):
    from mlpipe.model.features import FeatureMatrix

    monkeypatch.setattr(FeatureMatrix, "_ROWS_PER_SLICE", rows_per_slice)  # 7: a one-hot block in many slices
    monkeypatch.setattr(FeatureMatrix, "_ROWS_PER_PASS", rows_per_pass)  # 64: fitted by block, 8 slices of rows
    train, new = _mixed(500, 1), _mixed(200, 2)
    new.loc[3, "contract"] = "never-seen"
    for config in (_config(), _config(max_categories=2, missing_indicators=True)):
        ours = build_preprocessor(SPEC, config)
        assert isinstance(ours, FeatureMatrix)
        stock = _stock(ours)
        fitted = ours.fit_transform(train[SPEC.columns])
        expected = stock.fit_transform(train[SPEC.columns])
        assert fitted.dtype == np.float32 and fitted.flags.c_contiguous
        np.testing.assert_array_equal(fitted, expected.astype(np.float32))
        np.testing.assert_array_equal(ours.transform(new), stock.transform(new).astype(np.float32))
        assert list(ours.get_feature_names_out()) == list(stock.get_feature_names_out())


def test_the_median_imputer_computes_scikit_learns_median_a_column_at_a_time():
    """build_preprocessor's numeric imputer takes `median_of_present` for "median": the same
    statistics and output as the stock strategy, ties, gaps and a column with no value included."""
    import warnings

    from sklearn.impute import SimpleImputer

    from mlpipe.model.features import median_of_present

    rng = np.random.default_rng(7)
    for trial in range(200):
        rows, columns = int(rng.integers(1, 300)), int(rng.integers(1, 5))
        X = rng.normal(size=(rows, columns)) * 10.0 ** rng.integers(-3, 6)
        if trial % 3 == 0:
            X = np.round(X)  # ties
        X[rng.random((rows, columns)) < rng.random()] = np.nan
        if trial % 7 == 0:
            X[:, 0] = np.nan  # no value: missing, then dropped by both
        new = rng.normal(size=(20, columns))
        new[rng.random((20, columns)) < 0.3] = np.nan
        for indicator in (False, True):
            stock = SimpleImputer(strategy="median", add_indicator=indicator)
            ours = SimpleImputer(strategy=median_of_present, add_indicator=indicator)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # both warn that they skip the empty column
                np.testing.assert_array_equal(ours.fit_transform(X), stock.fit_transform(X))
                np.testing.assert_array_equal(ours.statistics_, stock.statistics_)
                np.testing.assert_array_equal(ours.transform(new), stock.transform(new))
    numeric = build_preprocessor(SPEC, _config()).transformers[0][1].steps[0][1]
    assert numeric.strategy is median_of_present
    mean = build_preprocessor(SPEC, _config(numeric_impute="mean")).transformers[0][1].steps[0][1]
    assert mean.strategy == "mean"


def test_a_large_input_is_fitted_block_by_block_and_transformed_in_slices(monkeypatch):
    """What a fit holds besides its input: the result and one slice, not every block's output
    over all rows and then their stacked copy (numpy's arrays are traced by tracemalloc)."""
    import tracemalloc

    from mlpipe.model.conform import Conform
    from mlpipe.model.features import FeatureMatrix

    frame = Conform(numeric=SPEC.numeric, categorical=SPEC.categorical).fit_transform(_mixed(200_000, 1))
    config = _config(missing_indicators=True)

    def fitted(rows_per_pass: int):
        monkeypatch.setattr(FeatureMatrix, "_ROWS_PER_PASS", rows_per_pass)
        preprocessor = build_preprocessor(SPEC, config)
        tracemalloc.start()
        try:
            out = preprocessor.fit_transform(frame)
            return preprocessor, out, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole, whole_out, whole_peak = fitted(1_000_000)  # above the input's rows: one pass, every block at once
    sliced, sliced_out, sliced_peak = fitted(16_384)
    np.testing.assert_array_equal(sliced_out, whole_out)
    assert sliced_out.dtype == np.float32 and sliced_out.flags.c_contiguous
    assert sliced_peak < 1.5 * sliced_out.nbytes < whole_peak
    new = _mixed(50_000, 2)
    np.testing.assert_array_equal(sliced.transform(new), whole.transform(new))
    assert list(sliced.get_feature_names_out()) == list(whole.get_feature_names_out())
    fitted_only = build_preprocessor(SPEC, config).fit(frame)  # `fit` alone: the blocks, no matrix
    np.testing.assert_array_equal(fitted_only.transform(new), whole.transform(new))


def test_feature_matrix_leaves_a_sparse_result_to_the_stock_stacking():
    from scipy import sparse

    preprocessor = build_preprocessor(SPEC, _config()).set_params(sparse_threshold=1.0)
    out = preprocessor.fit_transform(_train()[SPEC.columns])
    assert sparse.issparse(out)
    dense = build_preprocessor(SPEC, _config()).fit_transform(_train()[SPEC.columns])
    np.testing.assert_array_equal(out.toarray().astype(np.float32), dense)


def _seed_features(df: pd.DataFrame) -> pd.DataFrame:
    """The seed document's ChurnFeatureEngineer.engineer_features, on the sample's column names
    (monthly_minutes -> current_month_minutes, total_revenue -> total_charges)."""
    out = pd.DataFrame(index=df.index)
    out["tenure_bucket"] = pd.cut(df["tenure"], bins=[0, 12, 24, 48, np.inf], labels=["0-1y", "1-2y", "2-4y", "4y+"])
    out["usage_intensity"] = (df["current_month_minutes"] / df["tenure"]).fillna(0)
    out["revenue_per_month"] = (df["total_charges"] / df["tenure"]).fillna(0)
    out["activity_drop"] = ((df["prev_month_minutes"] - df["current_month_minutes"])
                            / df["prev_month_minutes"].replace(0, 1))
    return out


def test_churn_config_features_match_the_seed_formulas():
    from pathlib import Path

    from mlpipe.core.config import load_config

    features = load_config(Path(__file__).parents[3] / "conf" / "churn.yaml").features
    assert {r.name for r in features.ratios} | {c.name for c in features.changes} | {
        b.name for b in features.buckets} >= {"tenure_bucket", "usage_intensity", "revenue_per_month", "activity_drop"}
    frame = pd.DataFrame({
        "tenure": [5.0, 13.0, 30.0, 60.0, 0.0],
        "total_charges": [250.0, 1300.0, 2400.0, 6000.0, np.nan],
        "prev_month_minutes": [200.0, 300.0, 100.0, 0.0, 50.0],
        "current_month_minutes": [150.0, 330.0, 40.0, 10.0, 45.0],
    })
    spec = FeatureSpec(numeric=tuple(frame.columns), categorical=())
    unscaled = features.model_copy(update={"scale_numeric": False})
    preprocessor = build_preprocessor(spec, unscaled).fit(frame)
    out = pd.DataFrame(preprocessor.transform(frame), columns=preprocessor.get_feature_names_out())
    seed = _seed_features(frame)
    rows = [0, 1, 2]  # every denominator non-zero: the values must equal the seed's
    np.testing.assert_allclose(out["usage_intensity__current_month_minutes_per_tenure"][rows],
                               seed["usage_intensity"][rows])
    np.testing.assert_allclose(out["revenue_per_month__total_charges_per_tenure"][rows],
                               seed["revenue_per_month"][rows])
    np.testing.assert_allclose(out["activity_drop__drop_prev_month_minutes_to_current_month_minutes"][rows],
                               seed["activity_drop"][rows])
    buckets = out[[c for c in out.columns if c.startswith("tenure_bucket__")]].to_numpy().argmax(axis=1)
    assert buckets[:4].tolist() == seed["tenure_bucket"].cat.codes[:4].tolist()  # no tenure on an edge
    # Where the seed divides by zero our features are missing and imputed (median of the fitted
    # rows), not the seed's inf (x / 0) or its made-up (previous - current) / 1. The feature
    # matrix is float32: equal to the float64 median rounded to float32.
    assert out["usage_intensity__current_month_minutes_per_tenure"][4] == np.float32(np.median(
        seed["usage_intensity"][:4]))
    assert seed["activity_drop"][3] == -10.0
    assert out["activity_drop__drop_prev_month_minutes_to_current_month_minutes"][3] == np.float32(np.median(
        seed["activity_drop"][[0, 1, 2, 4]]))


def _as_text_per_row(X):
    """The encoder's input as it was made before (one fixed-width copy of the whole block)."""
    out = np.asarray(X, dtype=object)
    mask = np.vectorize(lambda v: v is None or (isinstance(v, float) and np.isnan(v)), otypes=[bool])(out)
    out = out.astype(str).astype(object)
    out[mask] = "__missing__"
    return out


def test_as_text_equals_the_whole_block_conversion_and_shares_strings():
    from mlpipe.model.features import _as_text

    X = pd.DataFrame({"plan": ["pro", None, "pro", "basic", "x\x00"],
                      "mixed": [1, 1.0, None, float("nan"), "1"],
                      "flag": pd.Series([True, False, None, True, False], dtype=object)})
    out = _as_text(X)
    assert out.dtype == object and out.shape == (5, 3)
    assert out.tolist() == _as_text_per_row(X).tolist()
    assert out[0, 0] is out[2, 0]  # a string per category, not per row
    one_column = np.array(["a", None, "b"], dtype=object)
    assert _as_text(one_column).tolist() == _as_text_per_row(one_column).tolist()
    # pandas `str` columns (what read_csv gives) and the cells factorize calls missing
    frame = pd.DataFrame({"text": pd.Series(["a", None, "b", "a", "x\x00"], dtype="str"),
                          "with_na": pd.Series(["a", pd.NA, "b", None, float("nan")], dtype=object),
                          "number": [1.0, 2.0, np.nan, 1.0, -0.0],
                          "mixed": pd.Series([True, 1, 1.0, "1", None], dtype=object),
                          "category": pd.Series(["b", "a", None, "b", "a"], dtype="category")})
    out = _as_text(frame)
    assert out.tolist() == _as_text_per_row(frame).tolist()
    assert out[:, 1].tolist() == ["a", "<NA>", "b", "__missing__", "__missing__"]
    assert out[0, 0] is out[3, 0] and out[0, 4] is out[3, 4]
    assert _as_text(frame.to_numpy()).tolist() == out.tolist()
