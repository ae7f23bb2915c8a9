"""mlpipe.adapters.mlflow.tracking in a real SQLite MLflow store: where the store is, experiments,
runs with their params, metrics and artifacts, step metrics, orphaned runs."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import mlflow
import pytest
from mlflow import MlflowClient

from mlpipe.adapters.mlflow.tracking import (
    OWNER_TAG,
    client,
    ensure_experiment,
    log_run,
    log_step_metrics,
    mark_orphaned_runs,
    mark_runs_of_dead_processes,
    run_artifact_text,
    run_url,
    tracking_uri,
)
from mlpipe.core.lineage import LINEAGE_KEY


def test_without_a_tracking_uri_the_store_is_sqlite_under_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLPIPE_HOME", str(tmp_path))
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve() / '.mlpipe' / 'mlflow.db'}"
    assert (tmp_path / ".mlpipe").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking_uri() == "http://mlflow.internal:5000"


def test_experiments_of_a_sqlite_store_keep_artifacts_beside_it(workspace):
    experiment_id = ensure_experiment("exp")
    assert ensure_experiment("exp") == experiment_id  # found, not created twice
    location = MlflowClient().get_experiment(experiment_id).artifact_location
    assert location == (workspace / "mlartifacts" / "exp").resolve().as_uri()


def test_log_run_records_params_metrics_tags_and_json(workspace):
    run_id = log_run(experiment="drift", run_name="drift-1", params={"data_uri": "d.csv"}, metrics={"psi": 0.25},
                     json_artifacts={"drift_report": {"drifted": True}}, tags={"mlpipe.drift": "drifted"})
    run = MlflowClient().get_run(run_id)
    assert run.info.run_name == "drift-1" and run.info.status == "FINISHED"
    assert run.data.params == {"data_uri": "d.csv"} and run.data.metrics == {"psi": 0.25}
    assert run.data.tags["mlpipe.drift"] == "drifted"
    assert json.loads(run_artifact_text(run_id, "drift_report.json")) == {"drifted": True}


def test_step_metrics_are_logged_per_epoch_past_the_batch_limit(workspace):
    run_id = MlflowClient().create_run(ensure_experiment("exp")).info.run_id
    rows = [{"epoch": e, "train_loss": 1 / (e + 1), "val_roc_auc": 0.5} for e in range(600)]  # 1,200 metrics
    log_step_metrics(run_id, rows)
    history = MlflowClient().get_metric_history(run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(600))
    assert {m.step: m.value for m in history}[3] == pytest.approx(0.25)
    assert len(MlflowClient().get_metric_history(run_id, "val_roc_auc")) == 600
    assert "epoch" not in MlflowClient().get_run(run_id).data.metrics


def test_run_url_only_for_a_tracking_server(workspace):
    run_id = MlflowClient().create_run(ensure_experiment("exp")).info.run_id
    assert run_url(run_id) is None


def test_runs_left_running_by_a_killed_attempt_are_marked_orphaned(workspace):
    experiment_id = ensure_experiment("exp")
    client = MlflowClient()
    left = client.create_run(experiment_id, tags={LINEAGE_KEY: "k1"}).info.run_id
    other = client.create_run(experiment_id, tags={LINEAGE_KEY: "k2"}).info.run_id
    with mlflow.start_run(experiment_id=experiment_id, tags={LINEAGE_KEY: "k1"}) as done:
        pass
    assert mark_orphaned_runs("exp", "k1") == [left]
    assert client.get_run(left).info.status == "FAILED"
    assert client.get_run(left).data.tags["mlpipe.orphaned"].startswith("true")
    assert client.get_run(other).info.status == "RUNNING"
    assert client.get_run(done.info.run_id).info.status == "FINISHED"
    assert mark_orphaned_runs("exp", "k1") == [] and mark_orphaned_runs("no-such-experiment", "k1") == []


def test_runs_of_dead_processes_are_orphaned_in_every_experiment(workspace):
    from mlpipe.core.processes import owner_token

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    client = MlflowClient()
    dead, alive = owner_token(finished.pid), owner_token()
    left = [client.create_run(ensure_experiment(name), tags={OWNER_TAG: dead}).info.run_id
            for name in ("exp", "m-promotions", "exp-tuning")]
    mine = client.create_run(ensure_experiment("exp"), tags={OWNER_TAG: alive}).info.run_id
    elsewhere = client.create_run(ensure_experiment("exp"), tags={OWNER_TAG: f"other-host:1|{finished.pid}|1"})
    untagged = client.create_run(ensure_experiment("exp")).info.run_id
    assert sorted(mark_runs_of_dead_processes()) == sorted(left)
    for run_id in left:
        run = client.get_run(run_id)
        assert run.info.status == "FAILED" and run.data.tags["mlpipe.orphaned"].startswith("true")
    for run_id in (mine, elsewhere.info.run_id, untagged):
        assert client.get_run(run_id).info.status == "RUNNING"
    assert mark_runs_of_dead_processes() == []


def test_the_first_open_of_a_store_pauses_the_collector_and_leaves_it_as_it_was(workspace, monkeypatch,
                                                                              new_mlflow_store):
    seen = []

    class Recording(MlflowClient):
        def __init__(self, *args, **kwargs):
            seen.append(gc.isenabled())
            if len(seen) == 3:
                raise ConnectionError("the store did not answer")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(mlflow, "MlflowClient", Recording)
    assert gc.isenabled()
    client()  # this workspace's store, first opened here: MLflow's imports and schema check, paused
    client()
    assert seen == [False, True] and gc.isenabled()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", new_mlflow_store(workspace / "other.db"))  # one not opened yet
    with pytest.raises(ConnectionError):
        client()
    assert gc.isenabled()  # back on after a failed open, and the next open pauses again
    assert isinstance(client(), MlflowClient) and seen[3] is False


def test_a_collector_already_off_stays_off_and_the_fluent_api_pauses_it_too(workspace, monkeypatch, new_mlflow_store):
    gc.disable()
    try:
        client()  # the workspace's store, first opened here
        assert not gc.isenabled()  # a caller that had turned it off keeps it off
    finally:
        gc.enable()
    seen, real = [], mlflow.get_experiment_by_name
    monkeypatch.setattr(mlflow, "get_experiment_by_name", lambda name: seen.append(gc.isenabled()) or real(name))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", new_mlflow_store(workspace / "other.db"))
    ensure_experiment("exp")
    assert seen[0] is False and gc.isenabled()
