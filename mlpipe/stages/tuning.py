"""Hyperparameter tuning: Optuna studies on shared RDB storage, tracked in MLflow.

One study per (experiment, dataset fingerprint, model family, search space, CV recipe): a
crashed or interrupted study resumes where it stopped, and the trial budget counts finished
trials (complete + pruned) in total, resumes included. This module is the coordinator: it opens
the study, starts the workers (mlpipe/compute/tuning_workers.py: processes on this machine or Ray tasks),
logs every finished trial to MLflow as a child run of the study's run, reports progress, and
returns the best parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from mlpipe.compute.tuning_workers import (
    FINISHED,
    RECORD,
    SKIPPED,
    LocalWorkers,
    StudyPlan,
    open_study,
    tuning_worker,
)
from mlpipe.core.config import ModelConfig, TuningConfig
from mlpipe.core.families import AUTO, BLEND
from mlpipe.core.paths import project_home
from mlpipe.model.features import FeatureSpec, model_pipeline
from mlpipe.stages.training import build_estimator

# -- the study and its trials -------------------------------------------------------------------

def default_storage() -> str:
    folder = project_home() / "data" / ".optuna"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'studies.db'}"


def expand_secrets(url: str) -> str:
    """`${VAR}` in a URL comes from the environment at connection time, so a password never
    sits in YAML, in the flow-run parameters or in MLflow params (they keep the placeholder)."""
    expanded = os.path.expandvars(url)
    if "${" in expanded:
        raise ValueError(f"tuning.storage refers to an environment variable that is not set: {url}")
    return expanded


def study_name(experiment: str, fingerprint: str, family: str, tuning: TuningConfig) -> str:
    """Stable name: the same data, family, space and CV recipe always resume the same study."""
    recipe = {"family": family, "space": {k: v.model_dump() for k, v in sorted(tuning.spaces.get(family, {}).items())},
              "cv_folds": tuning.cv_folds, "metric": tuning.metric, "seed": tuning.seed, "pruner": tuning.pruner}
    digest = hashlib.sha256(f"{fingerprint}|{json.dumps(recipe, sort_keys=True, default=str)}".encode()).hexdigest()
    return f"{experiment}-{family}-{digest[:12]}"


def finished_trials(study) -> int:
    return sum(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))


def fail_interrupted_trials(study) -> int:
    """Trials left RUNNING by a killed or interrupted run: failed, so a resume starts clean.
    (A study is run by one `tune` at a time; its workers start after this.)"""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for trial in stale:
        record = {**trial.user_attrs.get(RECORD, {}), "error": "interrupted: its run stopped before it finished"}
        study._storage.set_trial_user_attr(trial._trial_id, RECORD, record)
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    return len(stale)


class TrialLog:
    """Logs each finished trial to MLflow exactly once, as a child run of the study's run, from
    what the worker left in the study storage. Trials logged before (a resumed study) are found
    first; trials a worker gave back unrun (budget already claimed) are not logged. The MLflow
    calls run on a background thread, off the trial loop of the worker in this process; `close()`
    waits for them and re-raises a logging error."""

    def __init__(self, experiment_id: str, parent_run_id: str, study: str, metric: str):
        from concurrent.futures import ThreadPoolExecutor

        from mlpipe.adapters.mlflow import studies

        self._studies = studies
        self.experiment_id, self.parent_run_id, self.study, self.metric = experiment_id, parent_run_id, study, metric
        self.logged = studies.logged_trials(experiment_id, parent_run_id)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-trial-log")
        self._pending: list = []

    def log_finished(self, trials) -> int:
        new = 0
        for trial in trials:
            if trial.number in self.logged or trial.state.name not in (*FINISHED, "FAIL"):
                continue
            self.logged.add(trial.number)
            if SKIPPED in trial.user_attrs:
                continue
            record = trial.user_attrs.get(RECORD, {})
            self._pending.append(self._executor.submit(
                self._studies.log_trial_run, self.experiment_id, self.parent_run_id, self.study,
                number=trial.number, state=trial.state.name, params=trial.params, metric=self.metric,
                fold_scores=record.get("fold_scores", []), value=trial.value if trial.state.name == "COMPLETE" else None,
                seconds=record.get("seconds"), worker=record.get("worker"), error=record.get("error")))
            new += 1
        return new

    def close(self, raise_errors: bool = True) -> None:
        self._executor.shutdown(wait=True)
        if raise_errors:
            for future in self._pending:
                future.result()


class Monitor:
    """Calls `poll` every `every_s` seconds on a thread while the workers run, so progress and
    MLflow logging keep their pace however long a trial of the worker in this process takes.
    The thread runs in a copy of the caller's context: Prefect's run and settings contexts hold
    there. `stop()` re-raises the first error `poll` raised (polling stops at that error)."""

    def __init__(self, poll: Callable[[], None], every_s: float = 1.0):
        import contextvars
        import threading

        self._poll, self._every_s, self._error = poll, every_s, None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._loop,),
                                        name="mlpipe-tuning-monitor", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self._every_s):
            try:
                self._poll()
            except BaseException as error:  # noqa: BLE001 - handed to the caller by stop()
                self._error = error
                return

    def stop(self, raise_errors: bool = True) -> None:
        self._stopped.set()
        self._thread.join()
        if raise_errors and self._error is not None:
            raise self._error


@dataclass
class TuningResult:
    """What a study produced; `model` is the model config with the best params merged in."""

    study_name: str
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    metric: str
    complete: int
    pruned: int
    failed: int
    parent_run_id: str
    model: ModelConfig
    seconds: float  # from the call to the last trial: opening the study, starting workers, the trials
    objective_seconds: float = 0.0  # inside the objective (fitting + scoring folds), all workers together
    plots: dict[str, bytes] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        return {"tuning.study_name": self.study_name, "tuning.best_trial": str(self.best_trial),
                "tuning.best_value": f"{self.best_value:.6f}", "tuning.parent_run_id": self.parent_run_id}


def _plots(study) -> dict[str, bytes]:
    import optuna

    from mlpipe.stages.evaluation import figure_png, pyplot

    plt = pyplot()
    from optuna.visualization import matplotlib as ovm

    plots: dict[str, bytes] = {}
    for name, draw in (("optimization_history", ovm.plot_optimization_history),
                       ("param_importances", ovm.plot_param_importances),
                       ("slice", ovm.plot_slice)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. importances need 2+ complete trials
            continue
        figure = (axes.flat[0] if isinstance(axes, np.ndarray) else axes).get_figure()
        plots[name] = figure_png(figure)
        plt.close("all")
    return plots


def run_study(train: pd.DataFrame, target: str, spec: FeatureSpec, preprocessor, model: ModelConfig,
              tuning: TuningConfig, experiment: str, fingerprint: str,
              progress: Callable[[int, int, float | None, float | None], None] | None = None) -> TuningResult:
    """Create or resume the study, run its workers on the configured backend, log every trial
    and the study's outcome to MLflow, and return the best parameters."""
    from mlpipe.adapters.mlflow import studies

    space = _search_space(model, tuning)
    started = time.perf_counter()
    name = study_name(experiment, fingerprint, model.family, tuning)
    plan = _study_plan(name, target, spec, preprocessor, model, tuning, space)
    study = open_study(plan)
    fail_interrupted_trials(study)
    finished_at_start = finished_trials(study)
    # Local workers start first: their interpreters import while this process sets up MLflow.
    local = LocalWorkers(plan, train, tuning.workers) if tuning.backend == "local" else None
    try:
        experiment_id, parent = studies.study_run(experiment, name)
        trial_log = TrialLog(experiment_id, parent, name, tuning.metric)
    except BaseException:
        if local is not None:
            local.stop()
        raise
    poll = _poller(study, trial_log, progress, tuning.trials, finished_at_start, started)
    _run_and_log_trials(plan, train, tuning.workers, local, poll, trial_log)
    seconds = time.perf_counter() - started

    result = _study_result(study, name, model, tuning, parent, seconds)
    studies.finish_study_run(
        parent, metric=tuning.metric, best_params=result.best_params, best_value=result.best_value,
        best_trial=result.best_trial, plots=result.plots,
        counts={"complete": result.complete, "pruned": result.pruned, "failed": result.failed},
        settings={"tuning.trials": tuning.trials, "tuning.cv_folds": tuning.cv_folds, "tuning.metric": tuning.metric,
                  "tuning.pruner": tuning.pruner, "tuning.seed": tuning.seed})
    return result


def _search_space(model: ModelConfig, tuning: TuningConfig) -> dict:
    """The search space of `model.family`; fails for auto and blend, which are not one family, and
    for a family `tuning.spaces` has no space for."""
    if model.family in (AUTO, BLEND):
        raise ValueError(f"model.family {model.family}: a study tunes one family; the train and tune flows "
                         "resolve auto to one first (select-model)")
    space = tuning.spaces.get(model.family)
    if not space:
        raise ValueError(f"tuning.spaces has no search space for model.family {model.family!r}")
    return space


def _study_plan(name: str, target: str, spec: FeatureSpec, preprocessor, model: ModelConfig, tuning: TuningConfig,
                space: dict) -> StudyPlan:
    """What every worker needs to run trials of study `name`: its storage, budget, CV recipe and
    the unfitted pipeline (a clone of `preprocessor` and the family's estimator)."""
    workers = tuning.workers
    return StudyPlan(
        study_name=name, storage=expand_secrets(tuning.storage) if tuning.storage else default_storage(),
        budget=tuning.trials, timeout_s=tuning.timeout_s, seed=tuning.seed, pruner=tuning.pruner,
        metric=tuning.metric, cv_folds=tuning.cv_folds, target=target, columns=tuple(spec.columns),
        pipeline=model_pipeline(spec, clone(preprocessor), build_estimator(model)), space=space,
        threads_per_worker=tuning.threads_per_worker or max(1, (os.cpu_count() or 1) // workers))


def _poller(study, trial_log: TrialLog, progress: Callable[[int, int, float | None, float | None], None] | None,
            budget: int, finished_at_start: int, started: float) -> Callable[[], None]:
    """A `poll()` that logs the trials finished since its last call and reports progress: trials
    done (of `budget`), the best value so far, and an ETA from the pace of the trials finished
    in this run (`finished_at_start` were finished before it, at `started`)."""

    def poll() -> None:
        trials = study.get_trials(deepcopy=False)
        trial_log.log_finished(trials)
        if progress is None:
            return
        done = sum(t.state.name in FINISHED for t in trials)
        new = max(done - finished_at_start, 0)
        eta = (time.perf_counter() - started) / new * (budget - done) if new else None
        progress(min(done, budget), budget, _best_value(study), eta)

    return poll


def _run_and_log_trials(plan: StudyPlan, train: pd.DataFrame, workers: int, local: LocalWorkers | None,
                 poll: Callable[[], None], trial_log: TrialLog) -> None:
    """Run the workers until the study is done (`local` ones, else Ray tasks), polling meanwhile
    and once more at the end, then wait for the trial log. On an error the log is closed
    without raising its own."""
    monitor = Monitor(poll, every_s=1.0)
    try:
        if local is not None:
            local.run()
        else:
            _run_workers_on_ray(plan, train, workers)
        monitor.stop()
        poll()
    except BaseException:
        monitor.stop(raise_errors=False)
        trial_log.close(raise_errors=False)  # keep what was logged; the workers' error is the one to report
        raise
    trial_log.close()


def _trial_counts(trials) -> dict[str, int]:
    """Trials that ran, by state: COMPLETE, PRUNED and FAIL (those a worker gave back unrun left out)."""
    return {s: sum(t.state.name == s and SKIPPED not in t.user_attrs for t in trials)
            for s in ("COMPLETE", "PRUNED", "FAIL")}


def _study_result(study, name: str, model: ModelConfig, tuning: TuningConfig, parent: str,
                  seconds: float) -> TuningResult:
    """The study's outcome from its best trial, with its plots and `model` with the best params
    merged in. A study without a complete trial has its MLflow run (`parent`) marked failed, and raises."""
    from mlpipe.adapters.mlflow import studies

    trials = study.get_trials(deepcopy=False)
    counts = _trial_counts(trials)
    if counts["COMPLETE"] == 0:
        studies.fail_study_run(parent)
        raise RuntimeError(f"study {name} has no complete trial ({counts['PRUNED']} pruned, {counts['FAIL']} failed)")
    best = study.best_trial
    return TuningResult(
        study_name=name, best_params=dict(best.params), best_value=float(best.value), best_trial=best.number,
        metric=tuning.metric, complete=counts["COMPLETE"], pruned=counts["PRUNED"], failed=counts["FAIL"],
        parent_run_id=parent, seconds=seconds, objective_seconds=sum(
            t.user_attrs.get(RECORD, {}).get("seconds", 0.0) for t in trials),
        plots=_plots(study),
        model=model.model_copy(update={"params": {**model.params, model.family: {**model.active_params, **best.params}}}),
    )


def _best_value(study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:
        return None


def _run_workers_on_ray(plan: StudyPlan, train: pd.DataFrame, workers: int) -> None:
    """The tuning worker loop as Ray tasks: on a local Ray, or the cluster at RAY_ADDRESS. The
    train split goes to the object store once."""
    from mlpipe.adapters.ray_cluster import run_tasks, session

    with session(num_cpus=max(workers, 1)):
        run_tasks(tuning_worker, [(plan, i) for i in range(workers)], shared={"train": train},
                  num_cpus=plan.threads_per_worker, max_retries=1, what="tuning workers")
