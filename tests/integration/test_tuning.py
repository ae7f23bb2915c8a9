"""Optuna tuning: a real SQLite study, real MLflow store, real worker processes and Ray."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

HERE = Path(__file__).resolve().parent
JOB = HERE / "tuning_job.py"


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory, generate_churn) -> Path:
    path = tmp_path_factory.mktemp("tuning") / "tiny.csv"
    generate_churn(rows=700, seed=5).to_csv(path, index=False)
    return path


def job(csv, trials, workers=1, backend="local", *overrides, env=None, **popen):
    args = [sys.executable, str(JOB), str(csv), str(trials), str(workers), backend]
    for item in overrides:
        args += ["--set", item]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, **popen)


def finish(process, timeout=600) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def wait_for_progress(process, trials: int, timeout=300) -> None:
    """Until the job reports at least `trials` finished trials (it prints `progress n/N`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("progress ") and int(line.split()[1].split("/")[0]) >= trials:
            return
        assert process.poll() is None, process.stderr.read()[-3000:]
    raise AssertionError(f"no progress to {trials} trials in {timeout} s")


def study(workspace, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workspace / 'data' / '.optuna' / 'studies.db'}")


def states(s) -> dict[str, int]:
    out: dict[str, int] = {}
    for trial in s.get_trials(deepcopy=False):
        out[trial.state.name] = out.get(trial.state.name, 0) + 1
    return out


def child_runs(parent_run_id: str):
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                              max_results=1000)


def test_two_local_workers_finish_the_budget_without_duplicates(workspace, tiny_csv):
    result = finish(job(tiny_csv, 8, 2))
    s = study(workspace, result["study"])
    counts = states(s)
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 8
    numbers = [t.number for t in s.get_trials(deepcopy=False)]
    assert len(numbers) == len(set(numbers))
    children = child_runs(result["parent_run_id"])
    logged = [r.data.tags["optuna.trial"] for r in children]
    assert len(logged) == len(set(logged))  # every trial logged once, whichever worker ran it
    assert sorted(map(int, logged)) == sorted(t.number for t in s.get_trials(deepcopy=False)
                                              if t.state.name in ("COMPLETE", "PRUNED"))
    parent = MlflowClient().get_run(result["parent_run_id"])
    assert parent.data.metrics["best_cv_roc_auc"] == pytest.approx(result["best_value"])
    assert {"plots/optimization_history.png", "plots/param_importances.png"} <= {
        a.path for a in MlflowClient().list_artifacts(result["parent_run_id"], "plots")}
    assert {k.removeprefix("best.") for k in parent.data.params if k.startswith("best.")} == set(result["best_params"])


@pytest.mark.slow
def test_killed_study_resumes_to_exactly_the_budget(workspace, tiny_csv):
    budget = 30  # enough that the kill lands mid-study: progress is reported about once a second
    process = job(tiny_csv, budget, 1, "local", start_new_session=True)
    wait_for_progress(process, 3)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    storage = f"sqlite:///{workspace / 'data' / '.optuna' / 'studies.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    name = summary.study_name
    before = {t.number: t.params for t in study(workspace, name).get_trials(deepcopy=False)
              if t.state.name in ("COMPLETE", "PRUNED")}
    assert 3 <= len(before) < budget

    result = finish(job(tiny_csv, budget, 1))

    assert result["study"] == name
    s = study(workspace, name)
    finished = {t.number: t.params for t in s.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")}
    assert len(finished) == budget
    assert all(finished[n] == params for n, params in before.items())  # the first k were reused, not rerun
    assert states(s).get("RUNNING", 0) == 0  # the killed trial was failed on resume
    ran = sorted(t.number for t in s.get_trials(deepcopy=False) if "skipped" not in t.user_attrs)
    logged = sorted(int(r.data.tags["optuna.trial"]) for r in child_runs(result["parent_run_id"]))
    assert logged == ran  # each trial that ran, the killed run's included, has exactly one child run
    again = finish(job(tiny_csv, budget, 1))  # budget met: nothing more runs
    assert len([t for t in study(workspace, name).get_trials(deepcopy=False)]) == len(s.get_trials(deepcopy=False))
    assert again["best_value"] == result["best_value"]


def test_median_pruner_prunes_an_always_bad_trial(workspace, tiny_csv):
    sys.path.insert(0, str(HERE))
    from tuning_job import prepare

    from mlpipe.compute.tuning_workers import StudyPlan, open_study

    config, train, spec, preprocessor, fingerprint = prepare(str(tiny_csv), [])
    plan = StudyPlan(study_name="pruning", storage=f"sqlite:///{workspace / 'p.db'}", budget=10, timeout_s=None,
                     seed=1, pruner="median", metric="roc_auc", cv_folds=3, target="churn", columns=tuple(spec.columns),
                     pipeline=preprocessor, space={})
    s = open_study(plan)
    for _ in range(4):
        good = s.ask()
        for step in range(3):
            good.report(0.9, step)
        s.tell(good, 0.9)
    bad = s.ask()
    bad.report(0.3, 0)
    assert bad.should_prune()
    s.tell(bad, state=optuna.trial.TrialState.PRUNED)
    assert states(s) == {"COMPLETE": 4, "PRUNED": 1}


def test_bad_search_space_fails_at_config_load():
    from mlpipe.core.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"tuning.spaces.hist_gradient_boosting.learning_rate.*low .* below high"):
        load_config(HERE.parents[1] / "conf" / "churn.yaml",
                    ["tuning.spaces.hist_gradient_boosting.learning_rate={type: float, low: 0.5, high: 0.1}"])
    with pytest.raises(ConfigError, match=r"tuning.spaces.random_forest.*not a parameter"):
        load_config(HERE.parents[1] / "conf" / "churn.yaml",
                    ["tuning.spaces.random_forest.learning_rate={type: float, low: 0.1, high: 0.5}"])


@pytest.mark.slow
def test_ray_backend_on_local_ray(workspace, tiny_csv):
    result = finish(job(tiny_csv, 6, 2, "ray", env={"RAY_ADDRESS": ""}))
    s = study(workspace, result["study"])
    assert sum(states(s).get(k, 0) for k in ("COMPLETE", "PRUNED")) == 6
    assert len(child_runs(result["parent_run_id"])) == 6
    assert set(result) >= {"best_params", "best_value", "complete", "pruned", "failed", "parent_run_id"}


@pytest.mark.slow
def test_ray_backend_on_a_ray_cluster_via_ray_address(workspace, tiny_csv, ray_cluster):
    result = finish(job(tiny_csv, 4, 2, "ray", env={"RAY_ADDRESS": ray_cluster}))
    s = study(workspace, result["study"])
    assert sum(states(s).get(k, 0) for k in ("COMPLETE", "PRUNED")) == 4
    assert len(child_runs(result["parent_run_id"])) == 4


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.slow  # over 10 s
def test_train_with_tuning_registers_the_best_params(workspace, fast_config):
    from mlpipe.flows.training import train

    summary = train(config=fast_config("tuning.enabled=true", "tuning.trials=4", "tuning.cv_folds=2"))

    client = MlflowClient()
    version = client.get_model_version("churn-classifier", summary.version)
    tags = client.get_run(version.run_id).data.tags  # the run's: the version keeps its lineage
    name, best_trial = tags["tuning.study_name"], int(tags["tuning.best_trial"])
    trial = study(workspace, name).trials[best_trial]
    params = client.get_run(version.run_id).data.params
    for key, value in trial.params.items():
        assert params[f"model.params.hist_gradient_boosting.{key}"] == str(value)
    assert len(child_runs(tags["tuning.parent_run_id"])) == 4


@pytest.mark.usefixtures("prefect_server")
def test_train_with_auto_and_tuning_tunes_the_selected_family(workspace, fast_config):
    from mlpipe.flows.training import train

    summary = train(config=fast_config(
        "model.family=auto", "model.candidates=[logistic_regression, random_forest]",
        "model.params.random_forest={n_estimators: 20}", "tuning.enabled=true", "tuning.trials=3",
        "tuning.cv_folds=2"))

    client = MlflowClient()
    version = client.get_model_version("churn-classifier", summary.version)
    family = version.tags["mlpipe.model_family"]
    assert family in {"logistic_regression", "random_forest"}  # never a blend: a study tunes one family
    assert client.get_run(version.run_id).data.tags["tuning.study_name"].startswith(f"churn-{family}-")
    run = client.get_run(version.run_id)
    assert run.data.params["model.family"] == family
    board = client.load_table(run.info.experiment_id, "model_leaderboard.json", run_ids=[run.info.run_id])
    assert sorted(board["family"]) == ["logistic_regression", "random_forest"]


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.slow  # over 10 s
def test_tune_flow_reports_progress_in_logs_and_a_progress_artifact(workspace, fast_config, flow_logs):
    from prefect.client.orchestration import get_client

    from mlpipe.flows.tuning import tune

    state = tune(config=fast_config("tuning.trials=4", "tuning.cv_folds=2", "tuning.workers=2"), return_state=True)
    result = state.result()
    assert result.complete + result.pruned == 4
    flow_run_id = state.state_details.flow_run_id
    logs = flow_logs(flow_run_id, until=lambda logs: any(m.startswith("trials 4/4  best ") for m in logs))
    with get_client(sync_client=True) as prefect:
        progress = [a for a in prefect.read_artifacts() if a.flow_run_id == flow_run_id and a.type == "progress"]
    assert any(message.startswith("trials 4/4  best ") for message in logs), logs
    assert [a.data for a in progress] == [100.0]
    assert len(child_runs(result.parent_run_id)) == 4


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_spawned_workers_end_when_the_tuning_process_is_killed(workspace, tiny_csv):
    process = job(tiny_csv, 5000, 2, "local", start_new_session=True)  # far more than 20 s of trials
    try:
        wait_for_progress(process, 2)
        children = _children(process.pid)
        assert children, "the 2-worker run has a spawned worker"
        os.kill(process.pid, signal.SIGKILL)  # the coordinator alone, not its process group
        process.wait()
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in children)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.slow  # over 10 s
def test_a_finished_study_run_against_a_new_tracking_store_logs_its_runs_there(workspace, fast_config,
                                                                                new_mlflow_store, monkeypatch):
    """The same study (same storage, data, family and space) run again with MLFLOW_TRACKING_URI
    pointing at another store: that store gets the study's parent run, with the best trial, and
    its trials, rather than nothing (the cached result named a run in the first store)."""
    import mlflow

    from mlpipe.flows.tuning import tune

    config = fast_config("tuning.trials=2", "tuning.cv_folds=2")
    first = tune(config=config)
    other = new_mlflow_store(workspace / "other.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    mlflow.set_tracking_uri(other)
    again = tune(config=config)
    assert again.study_name == first.study_name and again.best_value == first.best_value
    parent = MlflowClient(other).get_run(again.parent_run_id)
    assert parent.data.metrics[f"best_cv_{again.metric}"] == pytest.approx(first.best_value)
    assert parent.data.tags["optuna.best_trial"] == str(first.best_trial)
    assert len(child_runs(again.parent_run_id)) == 2
