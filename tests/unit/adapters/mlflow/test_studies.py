"""mlpipe.adapters.mlflow.studies in a real SQLite MLflow store: a parent run per study, a child
run per trial, the outcome on the parent, and a resume that logs nothing twice."""

from __future__ import annotations

import json

from mlflow import MlflowClient

from mlpipe.adapters.mlflow.studies import fail_study_run, finish_study_run, log_trial_run, logged_trials, study_run
from mlpipe.adapters.mlflow.tracking import run_artifact_text


def trial(experiment_id: str, parent: str, number: int, state: str = "COMPLETE", **kwargs) -> str:
    values = dict(params={"lr": 0.1}, metric="roc_auc", fold_scores=[0.8, 0.9], value=0.85, seconds=1.5)
    return log_trial_run(experiment_id, parent, "s1", number=number, state=state, **{**values, **kwargs})


def test_a_resumed_study_reuses_its_parent_run(workspace):
    experiment_id, parent = study_run("tune", "s1")
    fail_study_run(parent)
    assert MlflowClient().get_run(parent).info.status == "FAILED"
    assert study_run("tune", "s1") == (experiment_id, parent)
    assert MlflowClient().get_run(parent).info.status == "RUNNING"
    assert study_run("tune", "s2")[1] != parent


def test_a_trial_is_a_child_run_with_its_fold_scores_and_state(workspace):
    experiment_id, parent = study_run("tune", "s1")
    client = MlflowClient()
    run = client.get_run(trial(experiment_id, parent, 0, worker=2))
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["optuna.trial"] == "0"
    assert run.data.tags["optuna.worker"] == "2" and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1"}
    assert run.data.metrics == {"fold_roc_auc": 0.9, "trial_seconds": 1.5, "cv_roc_auc": 0.85}
    assert [m.value for m in sorted(client.get_metric_history(run.info.run_id, "fold_roc_auc"),
                                    key=lambda m: m.step)] == [0.8, 0.9]
    pruned = client.get_run(trial(experiment_id, parent, 1, state="PRUNED", value=None))
    failed = client.get_run(trial(experiment_id, parent, 2, state="FAIL", value=None, error="boom"))
    assert (pruned.info.status, failed.info.status, failed.data.tags["optuna.error"]) == ("KILLED", "FAILED", "boom")
    assert "cv_roc_auc" not in pruned.data.metrics


def test_logged_trials_deletes_a_half_written_one(workspace):
    experiment_id, parent = study_run("tune", "s1")
    trial(experiment_id, parent, 0)
    trial(experiment_id, parent, 1)
    half = MlflowClient().create_run(experiment_id, tags={"mlflow.parentRunId": parent, "optuna.trial": "2"})
    assert logged_trials(experiment_id, parent) == {0, 1}
    assert MlflowClient().get_run(half.info.run_id).info.lifecycle_stage == "deleted"


def test_finishing_twice_keeps_the_first_params(workspace):
    _, parent = study_run("tune", "s1")
    outcome = dict(metric="roc_auc", best_value=0.9, best_trial=3, counts={"complete": 4, "pruned": 1},
                   settings={"tuning.trials": 5}, plots={"history": b"png"})
    finish_study_run(parent, best_params={"lr": 0.1}, **outcome)
    study_run("tune", "s1")  # resumed
    finish_study_run(parent, best_params={"lr": 0.2}, **{**outcome, "best_value": 0.95})
    run = MlflowClient().get_run(parent)
    assert run.info.status == "FINISHED" and run.data.tags["optuna.best_trial"] == "3"
    assert run.data.params == {"best.lr": "0.1", "tuning.trials": "5"}
    assert run.data.metrics["best_cv_roc_auc"] == 0.95 and run.data.metrics["trials_complete"] == 4
    assert json.loads(run_artifact_text(parent, "best_params.json"))["best_params"] == {"lr": 0.2}
    assert [a.path for a in MlflowClient().list_artifacts(parent, "plots")] == ["plots/history.png"]
