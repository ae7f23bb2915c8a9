"""Which failures a Prefect task retries, and how often (kernel: imports no Prefect).

Retries are for transient faults only: network, S3 and the tracking server. Deterministic
failures (bad data, bad config, a missing file or model) fail at once. Each policy is a dict of
`@task` keyword arguments: `@task(name=..., **TRACKING_RETRIES)`. A condition receives
Prefect's (task, task_run, state) and reads the failure from `state.result()`.
"""

from __future__ import annotations

import math
import os
from typing import Any


def exponential_delays(retries: int, backoff_factor: float = 2.0) -> list[float]:
    """The delays Prefect's `exponential_backoff(backoff_factor)` gives `retries` retries
    (2, 4, 8 s for three), spelled out so this module needs no Prefect import."""
    return [backoff_factor * 2 ** attempt for attempt in range(min(retries, 50))]


def is_transient_io_error(task, task_run, state) -> bool:
    """Retry only faults that may pass (network, throttling, timeouts), never a missing file,
    a format error or bad data (`DatasetError` and `DataValidationError` are `ValueError`s)."""
    try:
        state.result()
    except (FileNotFoundError, PermissionError, ValueError, TypeError):
        return False
    except (ConnectionError, TimeoutError, OSError):
        return True
    except Exception as error:  # botocore/aiobotocore errors carry no common base we can import cheaply
        return type(error).__module__.startswith(("botocore", "aiobotocore", "aiohttp"))
    return False


TRANSIENT_TRACKING_MESSAGES = ("Max retries exceeded", "Connection refused", "503", "502", "504",
                               "TEMPORARILY_UNAVAILABLE", "database is locked")


def is_transient_tracking_error(task, task_run, state) -> bool:
    """Retry connection problems and server errors of the tracking server, nothing else. MLflow's
    errors (`MlflowException` and its kin, all defined in `mlflow.*` modules) are told by their
    module, as the S3 clients' are above: the kernel imports no MLflow."""
    try:
        state.result()
    except (ConnectionError, TimeoutError):
        return True
    except Exception as error:
        if type(error).__module__.startswith("mlflow"):
            return any(s in str(error) for s in TRANSIENT_TRACKING_MESSAGES)
        return type(error).__module__.startswith(("requests", "urllib3"))
    return False


def first_retry_delay_s() -> float:
    """`MLPIPE_RETRY_BACKOFF_S`: the first retry's delay in seconds (default 2), each later one
    twice the one before. Read once, when the tasks are defined (at import)."""
    raw = os.environ.get("MLPIPE_RETRY_BACKOFF_S", "2")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"MLPIPE_RETRY_BACKOFF_S must be a number of seconds >= 0, got {raw!r}")
    return value


def _transient(condition) -> dict[str, Any]:
    return dict(retries=3, retry_delay_seconds=exponential_delays(3, first_retry_delay_s()), retry_jitter_factor=0.5,
                retry_condition_fn=condition)


# Reading or writing datasets and outputs (local files, s3://): three retries, 2/4/8 s apart by default.
IO_RETRIES = _transient(is_transient_io_error)

# Talking to the MLflow tracking server or registry: three retries, 2/4/8 s apart by default.
TRACKING_RETRIES = _transient(is_transient_tracking_error)
