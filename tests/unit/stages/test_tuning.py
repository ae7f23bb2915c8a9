"""tasks.tuning's pure parts: secrets in the storage URL, stable study names, trial bookkeeping
on an in-memory Optuna study, the progress monitor and the result's tags."""

from __future__ import annotations

import threading

import optuna
import pytest

from mlpipe.compute.tuning_workers import RECORD
from mlpipe.core.config import ModelConfig, ParamSpace, TuningConfig
from mlpipe.stages.tuning import (
    Monitor,
    TuningResult,
    expand_secrets,
    fail_interrupted_trials,
    finished_trials,
    study_name,
)


def test_storage_url_takes_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPTUNA_PW", "s3cret")
    assert expand_secrets("postgresql://optuna:${OPTUNA_PW}@db/optuna") == "postgresql://optuna:s3cret@db/optuna"
    monkeypatch.delenv("OPTUNA_PW")
    with pytest.raises(ValueError, match=r"not set: postgresql://optuna:\$\{OPTUNA_PW\}@db"):
        expand_secrets("postgresql://optuna:${OPTUNA_PW}@db/optuna")


def test_study_name_is_stable_and_changes_with_what_makes_the_study():
    tuning = TuningConfig()
    name = study_name("churn", "sha256:aa", "random_forest", tuning)
    assert name.startswith("churn-random_forest-") and name == study_name("churn", "sha256:aa", "random_forest",
                                                                          TuningConfig())
    assert name != study_name("churn", "sha256:bb", "random_forest", tuning)  # other data
    assert name != study_name("churn", "sha256:aa", "random_forest", TuningConfig(cv_folds=4))  # other recipe
    narrowed = {**tuning.spaces, "random_forest": {"max_depth": ParamSpace(type="int", low=3, high=5)}}
    assert name != study_name("churn", "sha256:aa", "random_forest", TuningConfig(spaces=narrowed))
    # how the trials run is not what they compute: the same study resumes
    assert name == study_name("churn", "sha256:aa", "random_forest", TuningConfig(workers=4, timeout_s=60))
    # another family's space does not touch this family's study
    other = {**tuning.spaces, "logistic_regression": {"C": ParamSpace(type="log_float", low=0.1, high=1)}}
    assert name == study_name("churn", "sha256:aa", "random_forest", TuningConfig(spaces=other))


def test_interrupted_trials_are_failed_and_not_counted_as_finished():
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    running = study.ask()  # a trial whose worker was killed
    assert finished_trials(study) == 2
    assert fail_interrupted_trials(study) == 1
    trial = study.get_trials(deepcopy=False)[running.number]
    assert trial.state.name == "FAIL" and "interrupted" in trial.user_attrs[RECORD]["error"]
    assert finished_trials(study) == 2 and fail_interrupted_trials(study) == 0


def test_monitor_polls_until_stopped_and_hands_back_the_first_error():
    polled = threading.Event()
    monitor = Monitor(polled.set, every_s=0.01)
    assert polled.wait(5)
    monitor.stop()

    def broken():
        raise RuntimeError("tracking server down")

    failing = Monitor(broken, every_s=0.01)
    failing._thread.join(5)  # the loop ends at the first error
    with pytest.raises(RuntimeError, match="tracking server down"):
        failing.stop()
    Monitor(broken, every_s=0.01).stop(raise_errors=False)


def test_tuning_result_tags_name_the_study_and_the_best_trial():
    result = TuningResult(study_name="churn-rf-abc", best_params={"max_depth": 5}, best_value=0.87654321,
                          best_trial=7, metric="roc_auc", complete=9, pruned=1, failed=0, parent_run_id="p1",
                          model=ModelConfig(family="random_forest"), seconds=12.0)
    assert result.tags() == {"tuning.study_name": "churn-rf-abc", "tuning.best_trial": "7",
                             "tuning.best_value": "0.876543", "tuning.parent_run_id": "p1"}
