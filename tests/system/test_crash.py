"""A `train` process killed (SIGKILL) at three points; the rerun completes, reuses cached steps
and leaves the registry consistent: champion loads, no alias on a half-made version, the
killed attempt's run marked orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
MODEL = "churn-classifier"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
# A slower fit (a big forest) so the kill can land inside it: 600 trees take seconds on one thread.
SLOW_FIT = ["model.family=random_forest", "model.params.random_forest.n_estimators=600",
            "evaluation.cv_folds=2", "evaluation.permutation_repeats=1"]


def finished_at(console: list[tuple[float, str]], task: str) -> float | None:
    """When the command's console said `task` finished (time.monotonic()), or None."""
    return next((at for at, line in console if f"Task run '{task}-" in line and "Finished in state" in line), None)


def fit_running(console: list[tuple[float, str]], _: MlflowClient) -> bool:
    """Half a second after the command's own console said `features` finished: `fit` comes next
    (a fixed family, no tuning) and has begun. The console, not the API: the fit's Running state
    reaches the API as an event, which on a busy machine came after a forest of 600 trees had
    finished (a 2000-tree forest was needed, fitted three times again by the rerun)."""
    features = finished_at(console, "features")
    return features is not None and time.monotonic() - features >= 0.5


def logging_started(_, mlflow_client: MlflowClient) -> bool:
    experiment = mlflow_client.get_experiment_by_name("churn")
    return bool(experiment and mlflow_client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'"))


def version_registered(_, mlflow_client: MlflowClient) -> bool:
    try:
        return bool(mlflow_client.search_model_versions(f"name = '{MODEL}'"))
    except Exception:
        return False


@pytest.mark.parametrize("kill_when", [fit_running, logging_started, version_registered],
                         ids=["during-fit", "during-model-logging", "between-register-and-promote"])
def test_rerun_after_sigkill_completes_and_registry_is_consistent(kill_when, workspace, fast_config, small_churn_csv,
                                                                   task_states):
    import prefect.settings

    from mlpipe.flows.training import train

    env = {**os.environ, "PREFECT_API_URL": prefect.settings.PREFECT_API_URL.value()}
    args = [str(Path(sys.executable).with_name("mlpipe")), "train", "--config", str(ROOT / "conf" / "churn.yaml"),
            "--data", str(small_churn_csv)]
    for item in ["evaluation.cv_folds=3", "evaluation.permutation_repeats=2",
                 "model.params.hist_gradient_boosting.max_iter=80", *SLOW_FIT]:
        args += ["--set", item]
    process = subprocess.Popen(args, env=env, cwd=workspace, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    console: list[tuple[float, str]] = []  # the command's log lines as its terminal shows them, timed

    def read_console() -> None:
        for line in process.stderr:
            console.append((time.monotonic(), line))

    threading.Thread(target=read_console, daemon=True).start()
    tracking = MlflowClient()
    deadline = time.monotonic() + 240
    while not kill_when(console, tracking):
        assert process.poll() is None, "the run finished before the kill point"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    if kill_when is fit_running:
        assert finished_at(console, "fit") is None, "the fit had finished before the kill"

    state = train(config=fast_config(*SLOW_FIT), return_state=True)

    assert state.is_completed(), state.result(raise_on_failure=False)
    summary = state.result()
    champion = tracking.get_model_version_by_alias(MODEL, "champion")
    assert champion.status == "READY" and str(champion.version) == summary.version
    assert mlflow.pyfunc.load_model(f"models:/{MODEL}@champion") is not None
    versions = tracking.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == 1  # the rerun reused what the killed attempt registered, or registered once
    experiment = tracking.get_experiment_by_name("churn")
    stale = tracking.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    assert stale == []
    if kill_when is not fit_running:  # fit and evaluate had finished before the kill: reused
        states = task_states(state.state_details.flow_run_id, "fit", "evaluate")
        assert states["fit"] == "Cached" and states["evaluate"] == "Cached", states
    if kill_when is logging_started:
        orphaned = tracking.search_runs([experiment.experiment_id], "tags.`mlpipe.orphaned` LIKE 'true%'")
        assert len(orphaned) == 1 and orphaned[0].info.status == "FAILED"
