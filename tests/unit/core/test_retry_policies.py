"""mlpipe.core.retry_policies: which failures are retried (transient I/O and tracking-server faults
only), and how often."""

from __future__ import annotations

import pytest
from mlflow.exceptions import MlflowException
from prefect.states import Completed, Failed
from prefect.tasks import exponential_backoff

from mlpipe.core.errors import DatasetError, DataValidationError
from mlpipe.core.retry_policies import (
    IO_RETRIES,
    TRACKING_RETRIES,
    exponential_delays,
    first_retry_delay_s,
    is_transient_io_error,
    is_transient_tracking_error,
)


def failed_with(error: BaseException):
    return Failed(data=error)


def raised_by(module: str) -> Exception:
    """An exception whose class lives in `module` (as botocore's or requests' do)."""
    return type("ClientError", (Exception,), {"__module__": module})("boom")


@pytest.mark.parametrize("error", [ConnectionResetError("reset by peer"), TimeoutError("read timed out"),
                                   OSError("Temporary failure in name resolution"), raised_by("botocore.exceptions"),
                                   raised_by("aiohttp.client_exceptions")])
def test_transient_io_errors_are_retried(error):
    assert is_transient_io_error(None, None, failed_with(error))


@pytest.mark.parametrize("error", [DatasetError("dataset s3://b/k does not exist"), FileNotFoundError("x"),
                                   PermissionError("denied"), DataValidationError("target 'y' has a single class"),
                                   ValueError("bad"), TypeError("bad"), RuntimeError("a bug"),
                                   raised_by("requests.exceptions")])
def test_deterministic_io_errors_are_not_retried(error):
    assert not is_transient_io_error(None, None, failed_with(error))


def test_a_completed_state_is_not_retried():
    assert not is_transient_io_error(None, None, Completed(data=1))
    assert not is_transient_tracking_error(None, None, Completed(data=1))


@pytest.mark.parametrize("error", [
    ConnectionError("Connection refused"), TimeoutError("timed out"),
    MlflowException("API request failed: 503"), MlflowException("API request to x failed: Max retries exceeded"),
    MlflowException("TEMPORARILY_UNAVAILABLE"), MlflowException("(sqlite3.OperationalError) database is locked"),
    raised_by("requests.exceptions"), raised_by("urllib3.exceptions"),
])
def test_transient_tracking_errors_are_retried(error):
    assert is_transient_tracking_error(None, None, failed_with(error))


@pytest.mark.parametrize("error", [
    MlflowException("INVALID_PARAMETER_VALUE"), MlflowException("RESOURCE_DOES_NOT_EXIST: no model m"),
    ValueError("no column signature"), OSError("disk full"), raised_by("botocore.exceptions"),
])
def test_other_tracking_errors_are_not_retried(error):
    assert not is_transient_tracking_error(None, None, failed_with(error))


def test_delays_are_those_of_prefects_exponential_backoff():
    for retries in (1, 3, 7):
        assert exponential_delays(retries) == exponential_backoff(backoff_factor=2)(retries)
    assert exponential_delays(3) == [2, 4, 8]


@pytest.mark.parametrize(("policy", "condition"), [(IO_RETRIES, is_transient_io_error),
                                                   (TRACKING_RETRIES, is_transient_tracking_error)])
def test_policies_retry_three_times_on_their_condition_only(policy, condition):
    first = first_retry_delay_s()  # the suite sets MLPIPE_RETRY_BACKOFF_S (tests/conftest.py)
    assert policy == {"retries": 3, "retry_delay_seconds": [first, 2 * first, 4 * first], "retry_jitter_factor": 0.5,
                      "retry_condition_fn": condition}


def test_the_first_delay_is_2_s_unless_configured(monkeypatch):
    monkeypatch.delenv("MLPIPE_RETRY_BACKOFF_S", raising=False)
    assert first_retry_delay_s() == 2.0
    monkeypatch.setenv("MLPIPE_RETRY_BACKOFF_S", "0.25")
    assert first_retry_delay_s() == 0.25
    for bad in ("-1", "soon", "nan", "inf"):
        monkeypatch.setenv("MLPIPE_RETRY_BACKOFF_S", bad)
        with pytest.raises(ValueError, match="MLPIPE_RETRY_BACKOFF_S must be a number of seconds"):
            first_retry_delay_s()


def test_the_configured_delay_reaches_the_tasks():
    """Read at import: a fresh process with MLPIPE_RETRY_BACKOFF_S=5 defines its tasks with it."""
    import os
    import subprocess
    import sys

    code = "from mlpipe.tasks.data import load_task; print(load_task.retries, load_task.retry_delay_seconds)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MLPIPE_RETRY_BACKOFF_S": "5"},
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["3", "[5.0,", "10.0,", "20.0]"]


def test_a_task_takes_a_policy_as_its_options():
    from prefect import task

    configured = task(name="t", **TRACKING_RETRIES)(lambda: None)
    assert (configured.retries, configured.retry_delay_seconds) == (3, TRACKING_RETRIES["retry_delay_seconds"])
    assert configured.retry_condition_fn is is_transient_tracking_error


def test_the_tracking_tasks_retry_transient_tracking_errors_only():
    """A model card that fails on a bug must fail at once, not three times over minutes."""
    from mlpipe.tasks.registration import register_task
    from mlpipe.tasks.reports import model_card_task

    for task_ in (register_task, model_card_task):
        assert task_.retry_condition_fn is is_transient_tracking_error, task_.name
