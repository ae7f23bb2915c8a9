"""tasks.validation: every contract failure names its column; the handled cases are cleaned."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpipe.core.config import DataConfig
from mlpipe.data.validation import DataValidationError, map_target, validate_dataset


def _config(**kwargs) -> DataConfig:
    kwargs.setdefault("min_rows", 2)
    kwargs.setdefault("target", "churn")
    return DataConfig(**kwargs)


def _frame(**extra) -> pd.DataFrame:
    """Six rows: a Yes/No target, a float feature with repeats, a text feature with repeats."""
    columns = {
        "churn": ["Yes", "No", "No", "Yes", "No", "No"],
        "tenure": [1.0, 5.0, 5.0, 12.0, 30.0, 1.0],
        "contract": ["Monthly", "Yearly", "Monthly", "Monthly", "Yearly", "Monthly"],
    }
    columns.update(extra)
    return pd.DataFrame(columns)


def _fails(frame: pd.DataFrame, config: DataConfig) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        validate_dataset(frame, config)
    return info.value


# -- failures ----------------------------------------------------------------------------------

def test_no_rows():
    error = _fails(_frame().iloc[:0], _config())
    assert "empty (no rows)" in str(error)


def test_no_columns():
    error = _fails(pd.DataFrame(index=range(5)), _config())
    assert "empty (no columns)" in str(error)


def test_missing_target_column():
    error = _fails(_frame().drop(columns=["churn"]), _config())
    assert error.column == "churn"
    assert "'churn'" in str(error) and "missing" in str(error)


def test_target_with_one_class():
    error = _fails(_frame(churn=["No"] * 6), _config())
    assert error.column == "churn"
    assert "'churn'" in str(error) and "single class" in str(error)


def test_target_with_missing_values():
    error = _fails(_frame(churn=["Yes", None, "No", "Yes", np.nan, "No"]), _config())
    assert error.column == "churn"
    assert "target 'churn' leaves 2 rows (33.3%) unlabeled: missing x2" in str(error)
    assert "more than data.max_unlabeled_share=0.01 of the rows" in str(error)


def test_target_missing_rows_are_listed_plainly():
    error = _fails(_frame(churn=["Yes", None, "No", "Yes", np.nan, "No"]), _config())
    assert "(row index 1, 4)" in str(error)


def test_target_with_unparseable_labels():
    error = _fails(_frame(churn=["Yes", "No", "maybe", "Yes", "No", "No"]), _config(positive_label="Yes"))
    assert error.column == "churn"
    assert "unlabeled: 'maybe' x1" in str(error)


def test_positive_label_never_present():
    error = _fails(_frame(churn=["Y", "N", "N", "Y", "N", "N"]), _config(positive_label="Yes"))
    assert error.column == "churn"
    assert "never takes the positive label 'Yes'" in str(error)


def test_numeric_target_not_01_without_positive_label():
    error = _fails(_frame(churn=[0, 1, 2, 1, 0, 0]), _config(positive_label=None))
    assert error.column == "churn"
    assert "unlabeled: '2' x1 (row index 2)" in str(error) and "set data.positive_label" in str(error)


def test_text_target_without_positive_label():
    error = _fails(_frame(), _config(positive_label=None))
    assert error.column == "churn"
    assert "not 0/1" in str(error)


def test_required_feature_missing():
    error = _fails(_frame(), _config(required_features=["tenure", "monthly_charges"]))
    assert error.column == "monthly_charges"
    assert "'monthly_charges'" in str(error)


def test_all_null_column():
    error = _fails(_frame(notes=[None] * 6), _config())
    assert error.column == "notes"
    assert "'notes'" in str(error) and "entirely empty" in str(error)


def test_all_null_column_can_be_dropped():
    validated = validate_dataset(_frame(notes=[None] * 6), _config(drop_columns=["notes"]))
    assert "notes" not in validated.frame.columns


def test_duplicate_column_names():
    frame = pd.DataFrame([["Yes", 1.0, 2.0], ["No", 3.0, 4.0]], columns=["churn", "tenure", "tenure"])
    error = _fails(frame, _config())
    assert error.column == "tenure"
    assert "duplicate column names ['tenure']" in str(error)


def test_fewer_rows_than_min_rows():
    error = _fails(_frame(), _config(min_rows=7))
    assert "6 rows" in str(error) and "data.min_rows=7" in str(error)


def test_min_rows_boundary_passes():
    assert validate_dataset(_frame(), _config(min_rows=6)).report.rows == 6


def test_no_features_left():
    error = _fails(_frame()[["churn", "contract"]], _config(id_columns=["contract"]))
    assert "no feature columns" in str(error)


# -- handled cases -----------------------------------------------------------------------------

def test_numbers_stored_as_text_are_coerced_and_blanks_counted():
    frame = _frame(total_charges=["10.5", " ", "3", "", None, "7"])
    validated = validate_dataset(frame, _config())
    column = validated.frame["total_charges"]
    assert column.dtype == np.float64
    assert column.iloc[0] == 10.5 and column.iloc[2] == 3.0 and column.iloc[5] == 7.0
    assert column.isna().tolist() == [False, True, False, True, True, False]
    report = validated.report
    assert "total_charges" in report.coerced_columns and "total_charges" in report.numeric_features
    assert report.missing_tokens["total_charges"] == {"": 2}  # " " and "" (None was already missing)
    assert not [w for w in report.warnings if "total_charges" in w]  # blanks are missing: nothing to warn


def test_coercion_without_blanks_warns_nothing():
    validated = validate_dataset(_frame(charges=["1", "2", "3", "4", "5", "5"]), _config())
    assert validated.report.coerced_columns == {"charges": 0}
    assert not any("charges" in w for w in validated.report.warnings)


def test_unique_text_column_is_dropped_as_id_with_warning():
    frame = _frame(customer_id=[f"C-{i:03d}" for i in range(6)])
    validated = validate_dataset(frame, _config())
    assert "customer_id" not in validated.frame.columns
    assert validated.report.id_columns == ["customer_id"]
    assert any("'customer_id'" in w and "looks like an ID" in w for w in validated.report.warnings)


def test_configured_id_column_is_dropped_silently():
    frame = _frame(account=["a", "b", "a", "b", "a", "b"])
    validated = validate_dataset(frame, _config(id_columns=["account"]))
    assert "account" not in validated.frame.columns
    assert validated.report.id_columns == ["account"]
    assert not any("account" in w for w in validated.report.warnings)


def test_unique_integer_column_is_an_id_but_unique_float_is_a_feature():
    frame = _frame(account_no=[3, 10, 25, 7, 41, 12], spend=[3.5, 10.1, 25.0, 7.2, 41.9, 12.3])
    validated = validate_dataset(frame, _config())
    assert "account_no" in validated.report.id_columns
    assert "spend" in validated.report.numeric_features


def test_id_and_single_value_checks_of_long_columns_read_past_their_first_rows():
    """Long columns are judged on their first 10,000 rows when those settle it; a column whose
    repeats or second value come later is still judged on every row."""
    n = 30_000
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({
        "churn": rng.choice(["Yes", "No"], n),
        "tenure": rng.random(n),
        "ref": pd.Series([f"R{i % 9_000}" if i < 12_000 else f"R{i}" for i in range(n)], dtype="str"),  # 10% repeats, early
        "code": pd.Series([f"K{i}" for i in range(n - 1)] + ["K0"], dtype="str"),  # one repeat, in the last row
        "region": pd.Series(["north"] * (n - 1) + ["south"], dtype="str"),  # a second value in the last row
        "plan": pd.Series(["basic"] * n, dtype="str"),
    })
    report = validate_dataset(frame, _config(id_unique_ratio=0.7)).report
    assert report.id_columns == ["ref", "code"]  # 90% and 99.997% unique, both >= 0.7
    assert "region" in report.categorical_features and "plan" not in report.features
    strict = validate_dataset(frame, _config()).report  # id_unique_ratio 1.0: every value distinct
    assert strict.id_columns == [] and {"ref", "code"} <= set(strict.categorical_features)


def test_yes_no_target_maps_to_1_0():
    validated = validate_dataset(_frame(), _config(positive_label="Yes"))
    assert validated.frame["churn"].tolist() == [1, 0, 0, 1, 0, 0]
    assert validated.frame["churn"].dtype == np.int64
    assert validated.report.positive_rate == pytest.approx(2 / 6)
    assert validated.target == "churn"


def test_target_labels_are_stripped():
    y, _ = map_target(pd.Series([" Yes", "No ", "No "]), "churn", "Yes")
    assert y.tolist() == [1, 0, 0]


_WHITESPACE_BUG = ("BUG: mlpipe/data/validation.py:88 counts classes on the raw values (pd.unique(series)) while "
                   "lines 97-107 compare stripped text, so 'No' and 'No ' count as two labels")


def test_target_label_variants_differing_by_whitespace_are_one_label():
    y, _ = map_target(pd.Series(["Yes", "No ", "No"]), "churn", "Yes")
    assert y.tolist() == [1, 0, 0]


def test_single_class_after_stripping_is_rejected():
    with pytest.raises(DataValidationError, match="single class"):
        map_target(pd.Series(["Yes", "Yes ", "Yes"]), "churn", "Yes")


def test_numeric_01_target_with_positive_label_none():
    validated = validate_dataset(_frame(churn=[1, 0, 0, 1, 0, 0]), _config(positive_label=None))
    assert validated.frame["churn"].tolist() == [1, 0, 0, 1, 0, 0]


def test_integer_positive_label():
    validated = validate_dataset(_frame(churn=[2, 1, 1, 2, 1, 1]), _config(positive_label=2))
    assert validated.frame["churn"].tolist() == [1, 0, 0, 1, 0, 0]


def test_pandas_str_columns_are_categorical_and_numbers_numeric():
    frame = _frame(region=pd.Series(["n", "s", None, "n", "s", "n"], dtype="str"),
                   calls=[1, 2, 2, 1, 3, 3])
    assert isinstance(frame["contract"].dtype, pd.StringDtype)  # pandas 3 infers `str`
    validated = validate_dataset(frame, _config())
    report = validated.report
    assert sorted(report.categorical_features) == ["contract", "region"]
    assert sorted(report.numeric_features) == ["calls", "tenure"]
    assert report.features == report.numeric_features + report.categorical_features
    for column in report.numeric_features:
        assert pd.api.types.is_numeric_dtype(validated.frame[column])
    assert list(validated.frame.columns) == ["tenure", "contract", "region", "calls", "churn"]


def test_bool_column_is_categorical():
    validated = validate_dataset(_frame(partner=[True, False, True, True, False, False]), _config())
    assert "partner" in validated.report.categorical_features


def test_input_frame_is_not_modified():
    frame = _frame(total_charges=["1", " ", "3", "4", "5", "6"])
    before = frame.copy()
    validate_dataset(frame, _config())
    pd.testing.assert_frame_equal(frame, before)


def test_validation_leaves_the_loaded_frame_as_it_was():
    rng = np.random.default_rng(0)
    raw = pd.DataFrame({"tenure": rng.integers(0, 60, 300), "plan": rng.choice(["a", "b"], 300),
                        "charges": pd.Series([f"{v:.2f}" if v > 5 else "" for v in rng.uniform(0, 99, 300)],
                                             dtype="str"),
                        "churn": rng.choice(["Yes", "No"], 300)})
    before = raw.copy()
    validated = validate_dataset(raw, DataConfig(target="churn", positive_label="Yes", required_features=[],
                                                 min_rows=10))
    pd.testing.assert_frame_equal(raw, before)  # the coerced column and the text target included
    assert validated.frame["charges"].dtype == "float64" and set(validated.frame["churn"]) == {0, 1}
    validated.frame.loc[0, "tenure"] = -5
    assert raw.loc[0, "tenure"] == before.loc[0, "tenure"]
