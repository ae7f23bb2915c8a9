"""Hyperparameter tuning: Optuna studies on shared RDB storage, tracked in MLflow.

One study per (experiment, dataset fingerprint, model family, search space, CV recipe): a
crashed or interrupted study resumes where it stopped, and the trial budget counts finished
trials (complete + pruned) in total, resumes included. Trials run in worker processes on this
machine or as Ray tasks; every worker runs the same `run_worker` loop against the shared
storage, so the two backends differ only in how workers are started.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from tasks.caching import STEP_CACHE, project_home
from tasks.config import LOWER_IS_BETTER, ModelConfig, ParamSpace, TuningConfig
from tasks.metrics import score_metric
from tasks.features import FeatureSpec, model_pipeline
from tasks.training import build_estimator

FINISHED = ("COMPLETE", "PRUNED")


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


def suggest(trial, space: dict[str, ParamSpace]) -> dict[str, Any]:
    """Draw one value per parameter from its declared range."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.type == "categorical":
            params[name] = trial.suggest_categorical(name, spec.choices)
        elif spec.type == "int":
            params[name] = trial.suggest_int(name, int(spec.low), int(spec.high), step=int(spec.step or 1))
        elif spec.type == "log_float":
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=True)
        else:
            params[name] = trial.suggest_float(name, spec.low, spec.high, step=spec.step)
    return params


@dataclass(frozen=True)
class StudyPlan:
    """Everything a worker needs; plain data so it travels to processes and Ray tasks."""

    study_name: str
    storage: str
    budget: int
    timeout_s: float | None
    seed: int
    pruner: str
    metric: str
    cv_folds: int
    target: str
    spec: FeatureSpec
    preprocessor: Any
    model: ModelConfig
    space: dict[str, ParamSpace]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    threads_per_worker: int = 1

    @property
    def direction(self) -> str:
        return "minimize" if self.metric in LOWER_IS_BETTER else "maximize"


def open_study(plan: StudyPlan, worker: int = 0):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(
        plan.storage, engine_kwargs={"connect_args": {"timeout": 60}} if plan.storage.startswith("sqlite") else None)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
              if plan.pruner == "median" else optuna.pruners.NopPruner())
    # Each worker seeds its sampler differently: identical seeds would draw identical trials.
    sampler = optuna.samplers.TPESampler(seed=plan.seed + worker)
    return optuna.create_study(study_name=plan.study_name, storage=storage, sampler=sampler, pruner=pruner,
                               direction=plan.direction, load_if_exists=True)


def finished_trials(study) -> int:
    return sum(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))


def cv_objective(trial, plan: StudyPlan, train: pd.DataFrame, log_trial: Callable | None = None) -> float:
    """Stratified k-fold score of the full Pipeline; fold scores are reported so the pruner can
    stop a bad trial after any fold."""
    import optuna

    params = suggest(trial, plan.space)
    model_config = plan.model.model_copy(update={"params": {**plan.model.params,
                                                            plan.model.family: {**plan.model.active_params, **params}}})
    pipeline = model_pipeline(clone(plan.preprocessor), build_estimator(model_config))
    X, y = train[list(plan.spec.columns)], train[plan.target].to_numpy()
    folds = StratifiedKFold(n_splits=plan.cv_folds, shuffle=True, random_state=plan.seed)
    scores: list[float] = []
    state, value = "COMPLETE", None
    started = time.perf_counter()
    try:
        for step, (fit_rows, score_rows) in enumerate(folds.split(X, y)):
            fold_model = clone(pipeline).fit(X.iloc[fit_rows], y[fit_rows])
            proba = fold_model.predict_proba(X.iloc[score_rows])[:, 1]
            scores.append(score_metric(plan.metric, y[score_rows], proba))
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                state = "PRUNED"
                raise optuna.TrialPruned(f"pruned after fold {step + 1}: mean {np.mean(scores):.4f}")
        value = float(np.mean(scores))
        return value
    except optuna.TrialPruned:
        raise
    except Exception:
        state = "FAILED"
        raise
    finally:
        if log_trial is not None:
            log_trial(trial.number, params, scores, state, value, time.perf_counter() - started)


class TrialLogger:
    """One nested MLflow run per trial, under the study's parent run, from whichever process
    or Ray worker ran it. Logging happens on a background thread, overlapping the next
    trial's fitting; `close()` waits for it and re-raises a logging error."""

    def __init__(self, plan: StudyPlan):
        from concurrent.futures import ThreadPoolExecutor

        self._log = _mlflow_trial_logger(plan)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-trial-log")
        self._pending: list = []

    def __call__(self, *args) -> None:
        self._pending.append(self._executor.submit(self._log, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        for future in self._pending:
            future.result()


def _mlflow_trial_logger(plan: StudyPlan) -> Callable:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri=plan.tracking_uri)

    def log(number: int, params: dict, scores: list[float], state: str, value: float | None, seconds: float):
        run = client.create_run(plan.experiment_id, run_name=f"trial-{number}", tags={
            "mlflow.parentRunId": plan.parent_run_id, "optuna.study": plan.study_name,
            "optuna.trial": str(number), "optuna.state": state})
        now = int(time.time() * 1000)
        metrics = [Metric(f"fold_{plan.metric}", s, now, i) for i, s in enumerate(scores)]
        metrics.append(Metric("trial_seconds", seconds, now, 0))
        if value is not None:
            metrics.append(Metric(f"cv_{plan.metric}", value, now, 0))
        client.log_batch(run.info.run_id, metrics=metrics,
                         params=[Param(k, str(v)) for k, v in params.items()],
                         tags=[RunTag("optuna.state", state)])
        client.set_terminated(run.info.run_id, status={"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED"))

    return log


def run_worker(plan: StudyPlan, train: pd.DataFrame, worker: int = 0,
               on_trial: Callable[[], None] | None = None) -> int:
    """Run trials until the study has `plan.budget` finished trials (complete + pruned) or the
    timeout passes; returns how many this worker ran. Many workers may share one study: a
    trial is only started while finished + running trials are below the budget, and a worker
    that loses that race gives its trial back (FAIL, tagged) instead of overshooting."""
    import optuna
    from optuna.trial import TrialState
    from threadpoolctl import threadpool_limits

    study = open_study(plan, worker)
    log_trial = TrialLogger(plan)
    deadline = time.monotonic() + plan.timeout_s if plan.timeout_s else math.inf
    ran = failures_in_a_row = 0
    with threadpool_limits(limits=plan.threads_per_worker):
        while time.monotonic() < deadline:
            if _claimed(study, math.inf) >= plan.budget:
                break
            trial = study.ask()
            if _claimed(study, trial.number) >= plan.budget:  # another worker claimed the last slot
                trial.set_user_attr("skipped", "budget reached")  # attributes first: a finished trial is frozen
                study.tell(trial, state=TrialState.FAIL)
                break
            try:
                value = cv_objective(trial, plan, train, log_trial)
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
                failures_in_a_row = 0
            except Exception as error:  # one bad parameter combination must not end the study
                trial.set_user_attr("error", f"{type(error).__name__}: {error}")
                study.tell(trial, state=TrialState.FAIL)
                failures_in_a_row += 1
                if failures_in_a_row >= 3:
                    raise RuntimeError(f"3 trials in a row failed; last: {type(error).__name__}: {error}") from error
            else:
                study.tell(trial, value)
                failures_in_a_row = 0
            ran += 1
            if on_trial is not None:
                on_trial()
    log_trial.close()
    return ran


def _claimed(study, below: float) -> int:
    """Trials numbered below `below` that count against the budget: finished or in flight."""
    return sum(t.number < below and t.state.name in (*FINISHED, "RUNNING") for t in study.get_trials(deepcopy=False))


def fail_interrupted_trials(study) -> int:
    """Trials left RUNNING by a killed or interrupted run: failed, so a resume starts clean.
    (A study is run by one `tune` at a time; its workers start after this.)"""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, "error", "interrupted: its run stopped before it finished")
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    return len(stale)


# -- starting workers ---------------------------------------------------------------------------

def _worker_process(plan: StudyPlan, train_path: str, worker: int) -> None:
    run_worker(plan, pd.read_pickle(train_path), worker)


def run_local_workers(plan: StudyPlan, train: pd.DataFrame, workers: int, poll: Callable[[], None]) -> None:
    """Worker 0 in this process (already warm), workers 1..N-1 spawned (a fresh interpreter
    each, so no state is shared by accident), all on one study storage."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        train_path = str(Path(folder) / "train.pkl")
        train.to_pickle(train_path)
        processes = [context.Process(target=_worker_process, args=(plan, train_path, i), daemon=True)
                     for i in range(1, workers)]
        for process in processes:
            process.start()
        try:
            run_worker(plan, train, 0, on_trial=poll)
        finally:
            while any(p.is_alive() for p in processes):
                poll()
                time.sleep(0.5)
        failed = [p.exitcode for p in processes if p.exitcode]
        if failed:
            raise RuntimeError(f"{len(failed)} tuning worker(s) exited with codes {failed}")


def run_ray_workers(plan: StudyPlan, train: pd.DataFrame, workers: int, poll: Callable[[], None]) -> None:
    """The same worker loop as Ray tasks: on a local Ray, or the cluster at RAY_ADDRESS."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # A local Ray binds to loopback: nothing this project starts listens on other interfaces.
            ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
    try:
        remote = ray.remote(num_cpus=plan.threads_per_worker)(run_worker)
        train_ref = ray.put(train)
        refs = [remote.remote(plan, train_ref, i) for i in range(workers)]
        pending = refs
        while pending:
            _, pending = ray.wait(pending, timeout=1.0)
            poll()
        ray.get(refs)  # re-raises a worker's error
    finally:
        if started_here:
            ray.shutdown()


# -- the study as a whole -----------------------------------------------------------------------

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
    seconds: float
    objective_seconds: float = 0.0
    plots: dict[str, bytes] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        return {"tuning.study_name": self.study_name, "tuning.best_trial": str(self.best_trial),
                "tuning.best_value": f"{self.best_value:.6f}", "tuning.parent_run_id": self.parent_run_id}


def _plots(study) -> dict[str, bytes]:
    import matplotlib
    import optuna

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    from tasks.evaluation import _png

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
        plots[name] = _png(figure)
        plt.close("all")
    return plots


def run_study(train: pd.DataFrame, target: str, spec: FeatureSpec, preprocessor, model: ModelConfig,
              tuning: TuningConfig, experiment: str, fingerprint: str,
              progress: Callable[[int, int, float | None, float | None], None] | None = None) -> TuningResult:
    """Create or resume the study, run it on the configured backend, log the parent MLflow run,
    and return the best parameters."""
    import mlflow
    from mlflow import MlflowClient

    from tasks.registry import ensure_experiment, tracking_uri

    space = tuning.spaces.get(model.family)
    if not space:
        raise ValueError(f"tuning.spaces has no search space for model.family {model.family!r}")
    name = study_name(experiment, fingerprint, model.family, tuning)
    cores = os.cpu_count() or 1
    workers = tuning.workers
    experiment_id = ensure_experiment(experiment)
    client = MlflowClient(tracking_uri=tracking_uri())
    parent = _parent_run(client, experiment_id, name)
    plan = StudyPlan(study_name=name, storage=expand_secrets(tuning.storage) if tuning.storage else default_storage(), budget=tuning.trials,
                     timeout_s=tuning.timeout_s, seed=tuning.seed, pruner=tuning.pruner, metric=tuning.metric,
                     cv_folds=tuning.cv_folds, target=target, spec=spec, preprocessor=preprocessor, model=model,
                     space=space, tracking_uri=tracking_uri(), experiment_id=experiment_id, parent_run_id=parent,
                     threads_per_worker=tuning.threads_per_worker or max(1, cores // workers))
    study = open_study(plan)
    fail_interrupted_trials(study)
    started = time.perf_counter()

    def poll() -> None:
        if progress is None:
            return
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state.name in FINISHED for t in trials)
        best = _best_value(study)
        elapsed = time.perf_counter() - started
        new = max(done - finished_at_start, 0)
        eta = elapsed / new * (tuning.trials - done) if new else None
        progress(min(done, tuning.trials), tuning.trials, best, eta)

    finished_at_start = finished_trials(study)
    if tuning.backend == "ray":
        run_ray_workers(plan, train, workers, poll)
    else:
        run_local_workers(plan, train, workers, poll)
    poll()
    seconds = time.perf_counter() - started

    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    if counts["COMPLETE"] == 0:
        client.set_terminated(parent, status="FAILED")
        raise RuntimeError(f"study {name} has no complete trial ({counts['PRUNED']} pruned, {counts['FAIL']} failed)")
    best = study.best_trial
    objective = sum((t.duration.total_seconds() for t in trials if t.duration is not None), 0.0)
    result = TuningResult(
        study_name=name, best_params=dict(best.params), best_value=float(best.value), best_trial=best.number,
        metric=tuning.metric, complete=counts["COMPLETE"], pruned=counts["PRUNED"], failed=counts["FAIL"],
        parent_run_id=parent, seconds=seconds, objective_seconds=objective, plots=_plots(study),
        model=model.model_copy(update={"params": {**model.params, model.family: {**model.active_params, **best.params}}}),
    )
    _log_parent(client, result, tuning)
    return result


def _best_value(study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:
        return None


def _parent_run(client, experiment_id: str, name: str) -> str:
    """The study's parent run: reused when the study resumes, so all its trials sit under one run."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`optuna.study` = '{name}' and "
                               "tags.`mlpipe.kind` = 'study'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(experiment_id, run_name=f"study-{name}",
                            tags={"optuna.study": name, "mlpipe.kind": "study"})
    return run.info.run_id


def _log_parent(client, result: TuningResult, tuning: TuningConfig) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    params = [Param(f"best.{k}", str(v)) for k, v in result.best_params.items()]
    params += [Param(k, str(v)) for k, v in {"tuning.trials": tuning.trials, "tuning.cv_folds": tuning.cv_folds,
                                             "tuning.metric": tuning.metric, "tuning.pruner": tuning.pruner,
                                             "tuning.seed": tuning.seed}.items()]
    existing = client.get_run(result.parent_run_id).data.params
    params = [p for p in params if p.key not in existing]  # params are write-once; a resume keeps them
    metrics = [Metric(f"best_cv_{result.metric}", result.best_value, now, 0),
               Metric("trials_complete", result.complete, now, 0), Metric("trials_pruned", result.pruned, now, 0),
               Metric("trials_failed", result.failed, now, 0)]
    client.log_batch(result.parent_run_id, metrics=metrics, params=params)
    client.set_tag(result.parent_run_id, "optuna.best_trial", str(result.best_trial))
    client.log_dict(result.parent_run_id, {"best_params": result.best_params, "best_value": result.best_value,
                                           "best_trial": result.best_trial}, "best_params.json")
    for name, png in result.plots.items():
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{name}.png"
            path.write_bytes(png)
            client.log_artifact(result.parent_run_id, str(path), "plots")
    client.set_terminated(result.parent_run_id, status="FINISHED")


@task(name="tune", cache_policy=STEP_CACHE - "train" - "preprocessor", persist_result=True,
      cache_result_in_memory=False)
def tune_task(train: pd.DataFrame, target: str, spec: FeatureSpec, preprocessor, model: ModelConfig,
              tuning: TuningConfig, experiment: str, fingerprint: str, data_key: str) -> TuningResult:
    """Run (or resume) the Optuna study; cached on (data, search space, trial budget)."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    logger = get_run_logger()
    artifact = create_progress_artifact(progress=0.0, description="tuning trials finished")
    last = {"done": -1}

    def progress(done: int, total: int, best: float | None, eta: float | None) -> None:
        if done == last["done"]:
            return
        last["done"] = done
        update_progress_artifact(artifact_id=artifact, progress=100.0 * done / total)
        logger.info("trials %d/%d  best %s  ETA %s", done, total, f"{best:.4f}" if best is not None else "-",
                    f"{eta:.0f} s" if eta is not None and math.isfinite(eta) else "-")

    result = run_study(train, target, spec, preprocessor, model, tuning, experiment, fingerprint, progress)
    logger.info("study %s: best %s %.4f (trial %d), %d complete, %d pruned, %d failed",
                result.study_name, result.metric, result.best_value, result.best_trial, result.complete,
                result.pruned, result.failed)
    return result


