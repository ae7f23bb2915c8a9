"""mlpipe.core.errors: the deliberate, never-retried errors and the short name lists their messages use."""

from __future__ import annotations

from mlpipe.core.errors import DatasetError, DataValidationError, name_list


def test_name_list_is_short():
    names = [f"column_with_a_rather_long_name_{i}" for i in range(40)]
    shown = name_list(names)
    assert len(shown) < 300 and shown.endswith(", ... 32 more]")
    assert "'column_with...ong_name_0', 'column_with...ong_name_1'" in shown
    assert name_list(["a", "b"]) == "['a', 'b']"


def test_errors_are_value_errors_and_a_validation_error_names_its_column():
    error = DataValidationError("column 'tenure' has text", "tenure")
    assert isinstance(error, ValueError) and error.column == "tenure" and str(error) == "column 'tenure' has text"
    assert DataValidationError("no rows").column is None
    assert issubclass(DatasetError, ValueError)
