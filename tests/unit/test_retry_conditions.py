"""Which failures are retried: transient I/O and tracking-server faults only."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from prefect.states import Completed, Failed

from tasks.data import is_transient_io_error
from tasks.errors import DatasetError
from tasks.storage import read_dataset
from tasks.registry import is_transient_tracking_error
from tasks.validation import DataValidationError


def failed_with(error: BaseException):
    return Failed(data=error)


@pytest.mark.parametrize("error", [ConnectionResetError("reset by peer"), TimeoutError("read timed out"),
                                   OSError("Temporary failure in name resolution")])
def test_transient_io_errors_are_retried(error):
    assert is_transient_io_error(None, None, failed_with(error))


@pytest.mark.parametrize("error", [DatasetError("dataset s3://b/k does not exist"), FileNotFoundError("x"),
                                   PermissionError("denied"), DataValidationError("target 'y' has a single class"),
                                   ValueError("bad")])
def test_deterministic_errors_are_not_retried(error):
    assert not is_transient_io_error(None, None, failed_with(error))


def test_tracking_errors():
    assert is_transient_tracking_error(None, None, failed_with(ConnectionError("Connection refused")))
    assert is_transient_tracking_error(None, None, failed_with(MlflowException("API request failed: 503")))
    assert not is_transient_tracking_error(None, None, failed_with(MlflowException("INVALID_PARAMETER_VALUE")))
    assert not is_transient_tracking_error(None, None, Completed(data=1))


def test_file_uri_reads_like_a_path(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,x\n2,y\n")
    assert read_dataset(path.as_uri()).equals(read_dataset(str(path)))
