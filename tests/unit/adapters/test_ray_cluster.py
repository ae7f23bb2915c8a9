"""mlpipe.adapters.ray_cluster without starting Ray: errors name the Ray job and the cause, and Prefect
retries only what Ray itself gave up on."""

from __future__ import annotations

import pytest
from ray.exceptions import WorkerCrashedError

from mlpipe.adapters.ray_cluster import RayJobError, RaySession, is_ray_system_failure


class _State:
    def __init__(self, error: BaseException | None):
        self.error = error

    def result(self):
        if self.error is not None:
            raise self.error
        return "ok"


def test_ray_job_error_names_the_job_and_the_cause():
    error = RayJobError("02000000", "cross-validation folds", WorkerCrashedError())
    assert str(error).startswith("Ray job 02000000: cross-validation folds failed: WorkerCrashedError: ")


@pytest.mark.parametrize(("error", "retry"), [
    (RayJobError("01000000", "fit", WorkerCrashedError()), True),  # a lost worker: worth another go
    (RayJobError("01000000", "fit", ZeroDivisionError("x")), False),  # the code's own error: same again
    (ValueError("not Ray"), False),
    (None, False),
])
def test_prefect_retries_only_failures_of_ray_itself(error, retry):
    assert is_ray_system_failure(None, None, _State(error)) is retry


def test_session_tags_carry_the_job_and_the_dashboard_when_there_is_one():
    plain = RaySession(job_id="03000000", address="10.0.0.5:6379", dashboard_url=None, started_here=False)
    assert plain.tags() == {"mlpipe.ray_job_id": "03000000", "mlpipe.ray_address": "10.0.0.5:6379"}
    with_ui = RaySession("03000000", "10.0.0.5:6379", "http://10.0.0.5:8265", False)
    assert with_ui.tags()["mlpipe.ray_dashboard_url"] == "http://10.0.0.5:8265"


class _WorkerGroupFailure(Exception):
    """Shaped as Ray Train's WorkerGroupError: the failure of each worker by rank."""

    def __init__(self, worker_failures: dict):
        super().__init__("Training failed due to worker errors")
        self.worker_failures = worker_failures


def test_a_ray_train_failure_is_the_users_only_when_no_worker_was_lost_to_ray():
    from mlpipe.adapters.ray_cluster import user_error

    bad_value = ValueError("column 'tenure' holds text")
    assert user_error(_WorkerGroupFailure({1: bad_value, 0: ValueError("same")}))[0] == 0
    assert user_error(_WorkerGroupFailure({1: bad_value})) == (1, bad_value)
    # One worker died: the survivor's broken collective is collateral, the run is worth restarting.
    assert user_error(_WorkerGroupFailure({0: RuntimeError("Connection closed by peer"), 1: WorkerCrashedError()})) \
        is None
    assert user_error(RuntimeError("no worker failures")) is None


def test_the_error_carries_the_whole_message_of_its_cause():
    cause = ValueError("first line\nthe line that says why")
    error = RayJobError("04000000", "Ray Train run 'mlp-1'", cause, " (worker rank 1; not retried)")
    assert str(error).endswith("ValueError: first line\nthe line that says why (worker rank 1; not retried)")
    long = RayJobError("04000000", "fit", ValueError("x" * 5000 + " the end"))
    assert str(long).endswith(" the end") and len(str(long)) < 2200
