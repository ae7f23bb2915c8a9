"""mlpipe.model.conform: the one step that turns raw rows into what the model was trained on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from mlpipe.core.errors import DataValidationError
from mlpipe.model.conform import (
    Conform,
    MissingColumnsError,
    NotANumberError,
    coerce_numeric_text,
    holds_booleans,
    numeric_values,
    text_values,
)

TRAIN = pd.DataFrame({
    "tenure": [1, 24, 60],
    "charges": [20.5, 70.0, 99.9],
    "plan": pd.Series(["basic", "plus", "pro"], dtype="str"),
    "paperless": [True, False, True],
})


def _fitted() -> Conform:
    return Conform(numeric=("tenure", "charges"), categorical=("plan", "paperless")).fit(TRAIN)


def test_raw_values_as_clients_send_them_come_out_as_training_saw_them():
    raw = pd.DataFrame({
        "tenure": pd.Series([1, None, "7", " ", np.inf], dtype=object),      # JSON ints, null, text, blank, inf
        "charges": ["29.85", "", " 1e3 ", None, "-inf"],                      # numbers stored as text
        "plan": ["basic", None, "unseen", "pro", 3],
        "paperless": [True, "false", None, "TRUE", 0],                      # every spelling of a boolean
        "customer_id": ["a", "b", "c", "d", "e"],                           # extra: ignored
    })
    out = _fitted().transform(raw)

    assert list(out.columns) == ["tenure", "charges", "plan", "paperless"]
    assert out["tenure"].dtype == out["charges"].dtype == np.float64
    np.testing.assert_array_equal(out["tenure"].to_numpy(), [1.0, np.nan, 7.0, np.nan, np.nan])
    np.testing.assert_array_equal(out["charges"].to_numpy(), [29.85, np.nan, 1000.0, np.nan, np.nan])
    assert out["plan"].tolist() == ["basic", None, "unseen", "pro", "3"]
    assert out["paperless"].tolist() == ["True", "False", None, "True", "False"]


def test_conforming_is_idempotent_and_keeps_the_index():
    conform = _fitted()
    raw = TRAIN.assign(tenure=["1", "", "60"]).set_axis([7, 8, 9])
    once = conform.transform(raw)
    pd.testing.assert_frame_equal(conform.transform(once), once)
    assert once.index.tolist() == [7, 8, 9]


def test_a_value_that_is_not_a_number_is_refused_naming_column_row_and_value():
    raw = TRAIN.assign(charges=["1", "twelve", "3"])
    said = r"column 'charges' must hold numbers: 'twelve' at row index 1 is not a number"
    with pytest.raises(NotANumberError, match=said) as error:
        _fitted().transform(raw)
    assert isinstance(error.value, DataValidationError) and error.value.column == "charges"

    refused, problems = _fitted().problems(raw.assign(tenure=["x", "2", "3"]))
    assert refused.tolist() == [True, True, False]
    assert [(p.position, p.column, p.value) for p in problems] == [(0, "tenure", "x"), (1, "charges", "twelve")]


def test_missing_columns_are_refused_all_named():
    with pytest.raises(MissingColumnsError, match=r"\['charges', 'paperless'\]") as error:
        _fitted().transform(TRAIN.drop(columns=["charges", "paperless"]))
    assert error.value.column == "charges"
    with pytest.raises(MissingColumnsError):
        Conform(numeric=("nope",)).fit(TRAIN)


def test_records_are_accepted_and_arrays_are_not():
    assert _fitted().transform(TRAIN.to_dict("records"))["tenure"].tolist() == [1.0, 24.0, 60.0]
    with pytest.raises(TypeError, match="named columns"):
        _fitted().transform(TRAIN.to_numpy())


def test_boolean_columns_are_learned_at_fit_and_clone_keeps_params():
    conform = _fitted()
    assert conform.boolean_ == ("paperless",)
    assert clone(conform).get_params() == {"numeric": ("tenure", "charges"), "categorical": ("plan", "paperless"),
                                           "na_values": (), "column_na_values": None}
    assert list(conform.get_feature_names_out()) == ["tenure", "charges", "plan", "paperless"]


def test_helpers():
    assert coerce_numeric_text(pd.Series(["1", "2", "two"])) is None
    assert coerce_numeric_text(pd.Series([" ", None])) is None
    assert coerce_numeric_text(pd.Series([1.0, 2.0])) is None
    values, blanks = coerce_numeric_text(pd.Series(["1", " ", None]))
    assert values.iloc[0] == 1.0 and values.iloc[1:].isna().all() and blanks == 1
    assert holds_booleans(pd.Series([True, None, False], dtype=object))
    assert not holds_booleans(pd.Series([1, 0]))
    values, not_number = numeric_values(pd.Series([True, False]))
    assert values.tolist() == [1.0, 0.0] and not not_number.any()
    assert text_values(pd.Series([1.5, None], dtype=object)).tolist() == ["1.5", None]


def _text_values_per_row(series: pd.Series, boolean: bool = False) -> list:
    """The conversion as it was made row by row: the reference the shared-string path must equal."""
    text = series.to_numpy(dtype=object).astype(str).astype(object)
    if boolean:
        lowered = np.char.lower(np.char.strip(text.astype(str)))
        text = np.where(np.isin(lowered, ["true", "1", "1.0", "yes"]), "True",
                        np.where(np.isin(lowered, ["false", "0", "0.0", "no"]), "False", text)).astype(object)
    text[series.isna().to_numpy()] = None
    blank = [isinstance(v, str) and not v.strip() for v in series.to_numpy(dtype=object)]  # blanks are missing
    text[np.asarray(blank, dtype=bool)] = None
    return text.tolist()


@pytest.mark.parametrize("series, boolean", [
    (pd.Series(["b", "a", None, "b", "", " c "], dtype="str"), False),
    (pd.Series(["b", "a", None, "b", "", " c "], dtype=object), False),
    (pd.Series(["true", " FALSE", None, "yes", "maybe", "0"], dtype="str"), True),
    (pd.Series(["x\x00", "x", None], dtype=object), False),  # a trailing NUL is dropped, as before
    (pd.Series([1, 1.0, True, "1", None, float("nan")], dtype=object), False),  # equal, not the same text
    (pd.Series(pd.Categorical(["p", None, "q", "p"])), False),
])
def test_text_values_equal_the_row_by_row_conversion(series, boolean):
    out = text_values(series, boolean=boolean)
    assert out.dtype == object and out.index.equals(series.index)
    assert out.tolist() == _text_values_per_row(series, boolean)


def test_text_values_rows_of_one_category_share_one_string():
    series = pd.Series(["Month-to-month", "One year", "Month-to-month", None] * 1000, dtype="str")
    out = text_values(series)
    assert out.iloc[0] == "Month-to-month" and out.iloc[0] is out.iloc[2] is out.iloc[3998]
    assert len({id(value) for value in out.dropna()}) == 2  # a pointer per row, a string per category


def test_conform_output_has_the_columns_in_order_and_its_own_memory():
    raw = TRAIN.copy()
    out = Conform(numeric=("tenure", "charges"), categorical=("plan",)).fit(raw).transform(raw)
    assert list(out.columns) == ["tenure", "charges", "plan"] and list(out.dtypes) == ["float64", "float64", object]
    out.loc[0, "charges"] = -1.0
    assert raw.loc[0, "charges"] == 20.5


def test_float_columns_are_shared_with_the_input_until_either_is_written():
    """A float64 column is what the model reads already: the conformed frame shares it (pandas
    copies on write), rather than holding a second copy of every number column of the train
    rows through the fit. Other columns, and a float column with +-inf, are converted."""
    raw = pd.DataFrame({"charges": [20.5, np.nan, 3.0], "tenure": [1, 2, 3], "rate": [1.0, np.inf, 2.0],
                        "plan": pd.Series(["a", None, "b"], dtype="str")})
    conform = Conform(numeric=("charges", "tenure", "rate"), categorical=("plan",)).fit(raw)
    out = conform.transform(raw)
    assert np.shares_memory(out["charges"].to_numpy(), raw["charges"].to_numpy())
    assert out["tenure"].dtype == "float64" and not np.shares_memory(out["rate"].to_numpy(), raw["rate"].to_numpy())
    assert np.isnan(out.loc[1, "rate"]) and raw.loc[1, "rate"] == np.inf
    out.loc[0, "charges"] = -1.0
    assert raw.loc[0, "charges"] == 20.5 and np.isnan(raw.loc[1, "charges"])
    raw.loc[2, "charges"] = 99.0
    assert conform.transform(raw).loc[2, "charges"] == 99.0 and out.loc[2, "charges"] == 3.0


def test_tokens_and_blanks_are_missing_in_every_column_as_null_is():
    conform = Conform(numeric=("tenure", "charges"), categorical=("plan", "paperless"), na_values=("?", "N/A"),
                      column_na_values={"charges": ["unknown"]}).fit(TRAIN)
    raw = TRAIN.assign(tenure=["?", " N/A ", "3"], charges=["unknown", "", "2.5"], plan=["?", "  ", "None"])
    nulls = TRAIN.assign(tenure=[None, None, "3"], charges=[None, None, "2.5"], plan=[None, None, "None"])
    pd.testing.assert_frame_equal(conform.transform(raw), conform.transform(nulls))
    assert conform.transform(raw)["plan"].tolist() == [None, None, "None"]  # "None" is a plan, not a gap
    refused, problems = conform.problems(raw.assign(tenure=["unknown", "1", "2"]))  # a token of charges only
    assert refused.tolist() == [True, False, False] and problems[0].value == "unknown"


def test_refusals_are_mlflow_exceptions_that_serving_passes_on_and_they_pickle():
    import pickle

    from mlflow.exceptions import MlflowException

    for bad, kind in ((TRAIN.assign(charges=["1", "x", "3"]), NotANumberError),
                      (TRAIN.drop(columns=["plan"]), MissingColumnsError)):
        with pytest.raises(kind) as error:
            _fitted().transform(bad)
        assert isinstance(error.value, MlflowException) and isinstance(error.value, DataValidationError)
        assert error.value.error_code == "INVALID_PARAMETER_VALUE" and error.value.message == str(error.value)
        again = pickle.loads(pickle.dumps(error.value))
        assert type(again) is type(error.value) and str(again) == str(error.value)
        assert again.column == error.value.column


def test_a_model_saved_before_tokens_reads_none():
    conform = _fitted()
    del conform.__dict__["na_values"], conform.__dict__["column_na_values"]  # as skops loads an older model
    assert conform.tokens("tenure") == () and repr(conform).startswith("Conform(")
    with pytest.raises(NotANumberError):
        conform.transform(TRAIN.assign(tenure=["?", "1", "2"]))
