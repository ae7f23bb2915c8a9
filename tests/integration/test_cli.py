"""`mlpipe train` as a user runs it: exit codes and the one-line error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
MLPIPE = str(Path(sys.executable).with_name("mlpipe"))


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env["MLPIPE_HOME"] = str(home)
    return subprocess.run([MLPIPE, "train", "--config", str(ROOT / "conf" / "churn.yaml"), *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=home)


def test_bad_config_key_exits_nonzero_naming_the_key(tmp_path):
    result = run_cli("--set", "modle.family=random_forest", home=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: invalid config: modle: unknown key")
    assert "Traceback" not in result.stdout + result.stderr


def test_bad_value_names_allowed_values(tmp_path):
    result = run_cli("--set", "model.family=catboost", home=tmp_path)
    assert result.returncode == 1
    assert "model.family" in result.stderr and "hist_gradient_boosting" in result.stderr


def test_the_end_of_a_command_silences_the_loggers_of_prefect_s_draining_workers():
    """What the workers that drain at the end of a command log under (a slow machine showed
    `EventsWorker - Still processing items` after the error line) is silenced with the rest."""
    import logging

    from prefect._internal.concurrency.services import QueueService
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    from mlpipe.cli.main import QUIET_AT_END, _quiet_shutdown_noise

    assert {"EventsWorker", "APILogWorker"} <= set(QUIET_AT_END)
    assert issubclass(EventsWorker, QueueService) and issubclass(APILogWorker, QueueService)
    loggers = [logging.getLogger(name) for name in QUIET_AT_END]
    levels = [logger.level for logger in loggers]
    try:
        _quiet_shutdown_noise()
        assert not logging.getLogger(EventsWorker.__name__).isEnabledFor(logging.WARNING)
        assert not logging.getLogger(APILogWorker.__name__).isEnabledFor(logging.WARNING)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def test_bad_dataset_exits_nonzero_with_one_line_and_no_traceback(tmp_path, small_churn_csv):
    frame = pd.read_csv(small_churn_csv)
    frame["churn"] = frame["churn"].replace({"No": "Maybe"}).where(frame.index % 2 == 0, "No")
    frame.loc[:5, "churn"] = "perhaps"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)

    result = run_cli("--data", str(bad), home=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: DataValidationError: target 'churn' leaves")
    assert "Traceback" not in output
    assert not (tmp_path / ".mlpipe" / "mlartifacts").exists()  # nothing was logged


def test_a_configured_prefect_api_that_does_not_answer_is_one_error_line(tmp_path):
    """PREFECT_API_URL pointing at a stopped server: one `error:` line naming the URL, at once,
    instead of Prefect's traceback after its retries."""
    from mlpipe.cli.local_server import free_port

    url = f"http://127.0.0.1:{free_port()}/api"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(MLPIPE_HOME=str(tmp_path), PREFECT_API_URL=url)
    result = subprocess.run([MLPIPE, "train", "--config", str(ROOT / "conf" / "churn.yaml")], capture_output=True,
                            text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot reach the Prefect API at {url}: connection refused; start it (`make server` for "
        "http://127.0.0.1:4200/api), or unset PREFECT_API_URL to run on a local server mlpipe starts"]
    assert not (tmp_path / ".mlpipe").exists()  # nothing ran


@pytest.mark.parametrize("command", [["history"], ["rollback", "--to", "1"]])
def test_a_tracking_server_that_does_not_answer_is_one_error_line(tmp_path, command):
    """MLFLOW_TRACKING_URI pointing at a stopped server: history and rollback end at once with
    one line naming it (MLflow's client retried for about 4 minutes in silence, then printed
    445 lines of traceback)."""
    from mlpipe.cli.local_server import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(MLPIPE_HOME=str(tmp_path), MLFLOW_TRACKING_URI=uri)
    result = subprocess.run([MLPIPE, *command], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot reach the MLflow tracking server at {uri}: connection refused; start it "
        "(`make mlflow-server` for http://127.0.0.1:5000), or unset MLFLOW_TRACKING_URI for the project's "
        "local store"]
