"""Every command with a configured server that does not answer: it exits non-zero within 30 s,
in at most a few lines, the last `error: cannot reach <what> at <URL>: <cause>; <what to do>`,
having done nothing. (tests/integration/test_cli.py checks train, history and rollback's exact
lines.)"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlpipe.cli.local_server import free_port

ROOT = Path(__file__).resolve().parents[2]
MLPIPE = str(Path(sys.executable).with_name("mlpipe"))
CONFIG = str(ROOT / "conf" / "churn.yaml")
COMMANDS = {
    "train": ["train", "--config", CONFIG],
    "tune": ["tune", "--config", CONFIG],
    "score": ["score", "--data", "rows.csv", "--output", "scores.parquet"],
    "drift": ["drift", "--data", "rows.csv"],
    "history": ["history"],
    "rollback": ["rollback", "--to", "1"],
    "deploy": ["deploy"],
}
NEEDS_PREFECT = ("train", "tune", "score", "drift", "deploy")
NEEDS_MLFLOW = ("train", "tune", "score", "drift", "history", "rollback")


def run_dead(command: str, variable: str, value: str, home: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env.update(MLPIPE_HOME=str(home), MLPIPE_SERVER_IDLE_S="0", **{variable: value})
    started = time.monotonic()
    result = subprocess.run([MLPIPE, *COMMANDS[command]], capture_output=True, text=True, timeout=120, env=env,
                            cwd=home)
    return result, time.monotonic() - started


def assert_one_cannot_reach_line(result, seconds: float, what: str, url: str) -> None:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode != 0 and seconds < 30, (result.returncode, seconds)
    assert 1 <= len(lines) <= 3 and "Traceback" not in result.stderr, result.stderr
    assert re.fullmatch(rf"error: cannot reach {what} at {re.escape(url)}: connection refused; \S.+", lines[-1]), lines


@pytest.mark.parametrize("command", NEEDS_PREFECT)
def test_a_dead_prefect_api_is_one_line_for(command, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/api"
    result, seconds = run_dead(command, "PREFECT_API_URL", url, tmp_path)
    assert_one_cannot_reach_line(result, seconds, "the Prefect API", url)
    assert not (tmp_path / ".mlpipe").exists()  # nothing ran


@pytest.mark.parametrize("command", NEEDS_MLFLOW)
def test_a_dead_tracking_server_is_one_line_for(command, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    result, seconds = run_dead(command, "MLFLOW_TRACKING_URI", uri, tmp_path)
    assert_one_cannot_reach_line(result, seconds, "the MLflow tracking server", uri)
    assert not (tmp_path / ".mlpipe").exists()


def test_mlflow_retries_are_bounded_and_each_says_what_it_waits_for(monkeypatch):
    """The CLI's bounded retry settings, and urllib3's warning at each retry as one plain line."""
    from urllib3.util.retry import Retry

    from mlpipe.cli import main

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "4"  # set by importing the CLI, unless already set
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:secret@127.0.0.1:9/")
    record = logging.LogRecord("urllib3.connectionpool", logging.WARNING, __file__, 1,
                               "Retrying (%r) after connection broken by '%r': %s",
                               (Retry(total=3), ConnectionRefusedError(111, "Connection refused"), "/api/2.0/x"), None)
    assert main._RetryLine().filter(record)
    message = record.getMessage()
    assert message.startswith("waiting for http://") and "connection refused" in message
    assert "3 attempt(s) left" in message and "secret" not in message


def test_prefect_client_retries_are_one_warning_line_each(monkeypatch):
    """Prefect's client logs its retries at DEBUG only: the CLI shows each as one line saying
    what it waits for, and still hides the client's other DEBUG records."""
    from mlpipe.cli import main

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    line = main._PrefectRetryLine(logging.INFO)
    retry = logging.LogRecord("prefect.client", logging.DEBUG, __file__, 1,
                              "Encountered retryable exception during request. Another attempt will be made in "
                              "2.13s. This is attempt 2/6.", None, None)
    other = logging.LogRecord("prefect.client", logging.DEBUG, __file__, 1, "Connecting to API", None, None)
    assert line.filter(retry) and not line.filter(other)
    assert retry.levelno == logging.WARNING
    assert retry.getMessage() == ("waiting for the Prefect API at http://127.0.0.1:9/api: no answer; retrying in "
                                  "2.1 s (attempt 2/6)")
    refused = logging.LogRecord("prefect.client", logging.DEBUG, __file__, 1,
                                "Encountered retryable exception during request. Another attempt will be made in "
                                "2.0s. This is attempt 1/6.", None, (ConnectionError, ConnectionError("refused"), None))
    busy = logging.LogRecord("prefect.client", logging.DEBUG, __file__, 1,
                             "Received response with retryable status code 503. Another attempt will be made in "
                             "2.0s. This is attempt 1/6.", None, None)
    assert line.filter(refused) and line.filter(busy)
    assert ": ConnectionError: refused; retrying in 2.0 s (attempt 1/6)" in refused.getMessage()
    assert busy.getMessage().endswith(": answered 503; retrying in 2.0 s (attempt 1/6)")  # an answer, not silence
    assert refused.exc_info is None  # one line, no traceback
