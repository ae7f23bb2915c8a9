"""Messy exports (issue 27): missing-value tokens, tokens found in numeric columns, unlabeled
rows, file line numbers in messages, and the data profile. Real files, read by the reader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpipe.core.config import DataConfig
from mlpipe.core.errors import DataValidationError
from mlpipe.data.reader import read_dataset, row_locator
from mlpipe.data.validation import validate_dataset


def _table(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, rows)
    return pd.DataFrame({
        "tenure": tenure.astype(str),
        "charges": np.round(rng.uniform(20, 120, rows), 2).astype(str),
        "plan": rng.choice(["Basic", "Plus", "None"], rows),  # "None" is a plan, not a gap
        "churn": np.where(rng.random(rows) < 1 / (1 + np.exp(tenure / 20 - 1)), "Yes", "No"),
    })


def _validate(tmp_path, frame: pd.DataFrame, **data):
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False)
    config = DataConfig(uri=str(path), target="churn", positive_label="Yes", min_rows=2, **data)
    return validate_dataset(read_dataset(str(path)), config, rows=row_locator(str(path)))


def test_default_tokens_are_missing_in_numeric_and_text_columns_and_none_stays_a_category(tmp_path):
    frame = _table()
    frame.loc[[3, 50], "tenure"] = "?"
    frame.loc[7, "charges"] = "N/A"
    frame.loc[[9, 10], "plan"] = ["?", "  "]
    validated = _validate(tmp_path, frame)
    report, clean = validated.report, validated.frame
    assert "tenure" in report.numeric_features and clean["tenure"].isna().sum() == 2
    assert clean["charges"].isna().sum() == 1 and pd.api.types.is_float_dtype(clean["charges"])
    assert clean["plan"].isna().sum() == 2 and "None" in set(clean["plan"].dropna())
    assert report.missing_tokens == {"tenure": {"?": 2}, "charges": {"N/A": 1}, "plan": {"?": 1, "": 1}}
    assert not report.warnings and not report.auto_na_values


def test_na_values_is_configurable(tmp_path):
    frame = _table()
    frame.loc[[3, 50], "tenure"] = "missing"
    frame.loc[[4], "plan"] = "?"
    report = _validate(tmp_path, frame, na_values=["missing"]).report
    assert report.missing_tokens == {"tenure": {"missing": 2}}  # "?" is a plan now: not listed


def test_a_rare_token_in_a_numeric_column_is_found_warned_and_recorded_with_file_lines(tmp_path):
    frame = _table()
    frame.loc[[5, 237], "tenure"] = "unknown"
    validated = _validate(tmp_path, frame)
    assert validated.report.auto_na_values == {"tenure": {"unknown": 2}}
    assert validated.frame["tenure"].isna().sum() == 2
    [warning] = validated.report.warnings
    assert warning.startswith("column 'tenure' is numeric but holds 'unknown' x2 (0.50% of the rows; lines 7, 239)")
    lines = (tmp_path / "export.csv").read_text().splitlines()
    assert lines[239 - 1].startswith("unknown,")  # line 239 of the file, as an editor numbers it


def test_tokens_above_the_share_are_refused_advising_na_values_not_dropping(tmp_path):
    frame = _table()
    frame.loc[frame.index % 20 == 0, "tenure"] = "unknown"
    with pytest.raises(DataValidationError) as error:
        _validate(tmp_path, frame)
    message = str(error.value)
    assert "column 'tenure' mixes numbers and text: 20 values (5.0% of the rows) are not numbers ('unknown' x20; " \
           "lines 2, 22, 42, 62, 82, ...)" in message
    assert "add them to data.na_values" in message and "drop_columns" not in message
    assert _validate(tmp_path, frame, auto_na_share=0.06).report.auto_na_values == {"tenure": {"unknown": 20}}


def test_values_that_are_not_tokens_are_refused_even_when_rare(tmp_path):
    frame = _table()
    frame.loc[5, "tenure"] = "12 months"
    with pytest.raises(DataValidationError, match=r"'12 months' x1; line 7\); fix them in the export"):
        _validate(tmp_path, frame)
    frame.loc[5, "tenure"] = "unknown"
    with pytest.raises(DataValidationError, match="raise data.auto_na_share"):
        _validate(tmp_path, frame, auto_na_share=0)


def test_few_unlabeled_rows_are_dropped_with_a_warning_and_keys_stay_aligned(tmp_path):
    frame = _table()
    frame.loc[237, "churn"] = "?"
    frame.loc[100, "churn"] = ""
    validated = _validate(tmp_path, frame, max_unlabeled_share=0.01)
    assert validated.report.unlabeled_rows == 2 and len(validated.frame) == 398
    assert 237 not in validated.frame.index and validated.row_keys.index.equals(validated.frame.index)
    assert validated.report.warnings == ["target 'churn': dropped 2 unlabeled row(s) (missing x2 (written '?' x1); "
                                         "lines 102, 239); data.unlabeled_rows=fail refuses them instead"]
    with pytest.raises(DataValidationError, match="leaves 2 rows .* data.unlabeled_rows is fail"):
        _validate(tmp_path, frame, unlabeled_rows="fail")


def test_many_unlabeled_rows_fail_naming_the_labels_found(tmp_path):
    frame = _table()
    frame.loc[frame.index % 10 == 0, "churn"] = "Maybe"
    with pytest.raises(DataValidationError) as error:
        _validate(tmp_path, frame)
    assert ("target 'churn' leaves 40 rows (10.0%) unlabeled: 'Maybe' x40 (lines 2, 12, 22, 32, 42, ...)"
            in str(error.value))


def test_a_frame_says_row_index_not_line():
    frame = _table()
    frame.loc[5, "tenure"] = "unknown"
    report = validate_dataset(frame, DataConfig(target="churn", positive_label="Yes", min_rows=2)).report
    assert "(0.25% of the rows; row index 5)" in report.warnings[0]


def test_the_profile_has_a_row_per_column_with_type_missing_tokens_distinct_and_role(tmp_path):
    frame = _table().assign(customer=[f"c{i}" for i in range(400)], note="x")
    frame.loc[[3, 50], "tenure"] = "?"
    frame.loc[[5], "charges"] = "unknown"
    profile = {row["column"]: row for row in _validate(tmp_path, frame, drop_columns=["note"]).report.profile}
    assert list(profile) == ["churn", "tenure", "charges", "plan", "customer", "note"]
    assert profile["tenure"] == {"column": "tenure", "role": "feature (numeric)", "type": "numeric", "missing": 0.005,
                                 "tokens_read_as_missing": "'?' x2", "distinct": profile["tenure"]["distinct"]}
    assert profile["charges"]["tokens_read_as_missing"] == "'unknown' x1 (found in a numeric column)"
    assert profile["plan"]["role"] == "feature (categorical)" and profile["plan"]["distinct"] == "3"
    assert profile["customer"]["role"] == "ID: unique per row"
    assert profile["note"]["role"] == "dropped: data.drop_columns"
    assert profile["churn"]["role"] == "target"


@pytest.mark.parametrize("slice_rows", [3, 1 << 16])
def test_tokens_in_arrow_text_are_nulled_in_place_across_chunks_and_slices(monkeypatch, slice_rows):
    """The text stays where it was (a new validity bitmap, no copy of a big column's characters),
    whatever the column's chunks and the slices it is stripped in; a sliced column still works."""
    import pyarrow as pa

    from mlpipe.data import validation

    monkeypatch.setattr(validation, "TOKEN_SLICE_ROWS", slice_rows)
    chunks = [pa.array(["a", " ? ", None, "NA", "b"], pa.large_string()), pa.array(["  ", "x", "NA ", "y"],
                                                                                   pa.large_string())]
    series = pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array(chunks), dtype=pd.StringDtype("pyarrow", np.nan)),
                       index=list("abcdefghi"), name="plan")
    nulled, found = validation._arrow_tokens(series, ["?", "NA"])
    expected = series.mask(pd.Series([False, True, False, True, False, True, False, True, False], index=series.index))
    pd.testing.assert_series_equal(nulled, expected)
    assert found == {"?": 1, "NA": 2, "": 1}
    before, after = pa.chunked_array(pa.array(series.array)), pa.chunked_array(pa.array(nulled.array))
    assert [c.buffers()[2].address for c in after.chunks] == [c.buffers()[2].address for c in before.chunks]
    part, found = validation._arrow_tokens(series.iloc[2:], ["?", "NA"])
    pd.testing.assert_series_equal(part, expected.iloc[2:])
    assert found == {"NA": 2, "": 1}
