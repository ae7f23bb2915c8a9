"""mlpipe.compute.tuning_workers: the tuning worker (study storage, the trial loop, the budget claim, records); no Prefect or MLflow in the worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlpipe.compute.tuning_workers import RECORD, SKIPPED, StudyPlan, open_study, run_worker, study_storage
from mlpipe.core.config import ParamSpace

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": (x[:, 0] + 0.5 * rng.normal(size=120) > 0).astype(int)})


def make_plan(tmp_path, budget=3, space=None, **changes) -> StudyPlan:
    pipeline = Pipeline([("features", StandardScaler()), ("model", LogisticRegression())])
    fields = dict(study_name="s", storage=f"sqlite:///{tmp_path / 'studies.db'}", budget=budget, timeout_s=None,
                  seed=3, pruner="none", metric="roc_auc", cv_folds=3, target="y", columns=("a", "b"),
                  pipeline=pipeline, space=space or {"C": ParamSpace(type="log_float", low=0.01, high=10.0)})
    return StudyPlan(**{**fields, **changes})


def by_state(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def test_a_worker_import_pulls_in_neither_prefect_nor_mlflow():
    """Spawned workers and Ray tasks import mlpipe.compute.tuning_workers; Prefect and MLflow would add
    seconds to every worker's start and need the tracking server on every cluster node."""
    code = ("import sys, mlpipe.compute.tuning_workers; heavy = [m for m in ('prefect', 'mlflow', 'matplotlib', 'ray') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sqlite_study_storage_uses_wal(tmp_path):
    storage = study_storage(f"sqlite:///{tmp_path / 'w.db'}")
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_worker_runs_the_budget_and_leaves_a_record_per_trial(tmp_path, frame):
    plan = make_plan(tmp_path, budget=4)
    assert run_worker(plan, frame, worker=2) == 4
    study = open_study(plan)
    assert by_state(study) == {"COMPLETE": 4}
    for trial in study.trials:
        record = trial.user_attrs[RECORD]
        assert len(record["fold_scores"]) == 3 and record["worker"] == 2 and record["seconds"] > 0
        assert trial.value == pytest.approx(np.mean(record["fold_scores"]))
        assert 0.01 <= trial.params["C"] <= 10.0
    assert run_worker(plan, frame) == 0  # the budget counts finished trials in total: nothing more runs


def test_sampled_params_reach_the_model_step(tmp_path, frame, monkeypatch):
    seen = []
    original = LogisticRegression.fit

    def spy(self, *args, **kwargs):
        seen.append(self.C)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", spy)
    plan = make_plan(tmp_path, budget=2)
    run_worker(plan, frame)
    study = open_study(plan)
    assert sorted(set(seen)) == sorted(t.params["C"] for t in study.trials)


def test_a_worker_gives_back_a_trial_when_the_budget_is_already_claimed(tmp_path, frame):
    plan = make_plan(tmp_path, budget=2)
    study = open_study(plan)
    study.ask(), study.ask()  # two trials in flight elsewhere claim the whole budget
    assert run_worker(plan, frame) == 0
    assert by_state(study) == {"RUNNING": 2}  # the pre-check saw it: no trial was even created


def test_a_worker_that_loses_the_race_fails_its_trial_as_skipped(tmp_path, frame, monkeypatch):
    import mlpipe.compute.tuning_workers as distributed

    plan = make_plan(tmp_path, budget=1)
    study = open_study(plan)
    real = distributed._claimed
    checks = []

    def racing(s, below):
        claimed = real(s, below)
        checks.append(claimed)
        if len(checks) == 1:  # between this worker's check and its ask, another worker takes the slot
            study.ask()
        return claimed

    monkeypatch.setattr(distributed, "_claimed", racing)
    assert run_worker(plan, frame) == 0
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["RUNNING", "FAIL"]  # the other worker's, then ours given back
    assert SKIPPED in trials[1].user_attrs and checks == [0, 1]


def test_failing_trials_are_recorded_and_three_in_a_row_stop_the_worker(tmp_path, frame):
    plan = make_plan(tmp_path, budget=5, space={"C": ParamSpace(type="float", low=-2.0, high=-1.0)})  # C must be > 0
    with pytest.raises(RuntimeError, match="3 trials in a row failed.*C"):
        run_worker(plan, frame)
    trials = open_study(plan).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL"] * 3
    assert all("InvalidParameterError" in t.user_attrs[RECORD]["error"] for t in trials)


def test_trials_are_logged_once_each_also_across_a_resume(workspace, tmp_path, frame):
    from mlpipe.adapters.mlflow import studies
    from mlpipe.stages.tuning import TrialLog, fail_interrupted_trials

    plan = make_plan(tmp_path, budget=3)
    run_worker(plan, frame)
    study = open_study(plan)
    experiment_id, parent = studies.study_run("t", plan.study_name)

    log = TrialLog(experiment_id, parent, plan.study_name, "roc_auc")
    assert log.log_finished(study.get_trials(deepcopy=False)[:2]) == 2
    assert log.log_finished(study.get_trials(deepcopy=False)[:2]) == 0
    log.close()

    running = study.ask()  # killed mid-trial ...
    skipped = study.ask()
    skipped.set_user_attr(SKIPPED, "budget reached")
    study.tell(skipped, state=TrialState.FAIL)
    client = MlflowClient()
    half = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent, "optuna.trial": "2"})  # killed mid-log

    assert fail_interrupted_trials(study) == 1  # ... so the resume fails it
    resumed = TrialLog(experiment_id, parent, plan.study_name, "roc_auc")
    assert resumed.logged == {0, 1}  # the half-written run was dropped, to be logged again
    assert resumed.log_finished(study.get_trials(deepcopy=False)) == 2  # trial 2 again, and the interrupted one
    resumed.close()

    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    numbers = sorted(int(r.data.tags["optuna.trial"]) for r in children)
    assert numbers == [0, 1, 2, running.number]
    assert half.info.run_id not in {r.info.run_id for r in children}
    interrupted = next(r for r in children if r.data.tags["optuna.trial"] == str(running.number))
    assert interrupted.info.status == "FAILED" and "interrupted" in interrupted.data.tags["optuna.error"]
    complete = next(r for r in children if r.data.tags["optuna.trial"] == "0")
    assert complete.info.status == "FINISHED"
    assert complete.data.metrics["cv_roc_auc"] == pytest.approx(study.trials[0].value)
    assert float(complete.data.params["C"]) == pytest.approx(study.trials[0].params["C"])
    history = client.get_metric_history(complete.info.run_id, "fold_roc_auc")
    assert [m.step for m in history] == [0, 1, 2]
