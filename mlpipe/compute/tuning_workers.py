"""Running tuning trials in parallel: worker processes on this machine, or Ray tasks on a local
Ray or on the cluster at `RAY_ADDRESS` (started by mlpipe/adapters/ray_cluster.py, which owns every Ray call).

Every worker runs the same loop (`run_worker`) against the study's shared Optuna storage, so the
two backends differ only in how workers start. A worker imports sklearn, pandas and Optuna and
nothing else of weight: no Prefect, no MLflow. A spawned process is ready in about 2 s instead
of 4-5 s, and cluster nodes need no route to (or credentials for) the tracking server. The
coordinator (mlpipe/stages/tuning.py) logs each finished trial to MLflow from the study storage, where
the worker leaves its fold scores and timing.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from mlpipe.compute.evaluation_units import estimator_threads, in_process
from mlpipe.core.config import LOWER_IS_BETTER, ParamSpace
from mlpipe.core.metrics import score_metric

FINISHED = ("COMPLETE", "PRUNED")
SKIPPED = "skipped"  # user attribute of a trial given back because the budget was already claimed
RECORD = "mlpipe"  # user attribute the objective leaves for the coordinator: fold scores, seconds, worker, error


@dataclass(frozen=True)
class StudyPlan:
    """Everything a worker needs; plain data, so it travels to processes and Ray tasks.

    `pipeline` is the unfitted features + model Pipeline as configured; a trial sets its
    sampled parameters on the `model` step."""

    study_name: str
    storage: str
    budget: int
    timeout_s: float | None
    seed: int
    pruner: str
    metric: str
    cv_folds: int
    target: str
    columns: tuple[str, ...]
    pipeline: Any
    space: dict[str, ParamSpace]
    threads_per_worker: int = 1

    @property
    def direction(self) -> str:
        return "minimize" if self.metric in LOWER_IS_BETTER else "maximize"


def study_storage(url: str):
    """Optuna RDB storage. A SQLite file is put in WAL mode: readers (every worker's budget check,
    the coordinator's progress) no longer wait for a writer, and a commit costs no fsync, which
    roughly halves the storage time of a trial. WAL needs a local disk, as SQLite itself does."""
    import optuna
    from sqlalchemy import event

    if not url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url)
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})

    def wal(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", wal)
    storage.engine.dispose()  # connections opened while Optuna set up its tables predate the listener
    return storage


def open_study(plan: StudyPlan, worker: int = 0):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
              if plan.pruner == "median" else optuna.pruners.NopPruner())
    # Each worker seeds its sampler differently: identical seeds would draw identical trials.
    sampler = optuna.samplers.TPESampler(seed=plan.seed + worker)
    return optuna.create_study(study_name=plan.study_name, storage=study_storage(plan.storage), sampler=sampler,
                               pruner=pruner, direction=plan.direction, load_if_exists=True)


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


def cv_objective(trial, plan: StudyPlan, X: pd.DataFrame, y: np.ndarray, worker: int = 0) -> float:
    """Stratified k-fold score of the full Pipeline with the trial's parameters. The running mean
    is reported after each fold so the pruner can stop a bad trial early. The fold scores and the
    seconds spent are left on the trial (one user attribute) for the coordinator to log."""
    import optuna

    folds = StratifiedKFold(n_splits=plan.cv_folds, shuffle=True, random_state=plan.seed)
    scores: list[float] = []
    record: dict[str, Any] = {"fold_scores": scores, "worker": worker}
    started = None
    try:
        params = suggest(trial, plan.space)
        pipeline = clone(plan.pipeline).set_params(**{f"model__{name}": value for name, value in params.items()})
        started = time.perf_counter()
        for step, (fit_rows, score_rows) in enumerate(folds.split(X, y)):
            fold_model = in_process(pipeline).fit(X.iloc[fit_rows], y[fit_rows])  # a clone; no Ray Train per fold
            proba = fold_model.predict_proba(X.iloc[score_rows])[:, 1]
            scores.append(score_metric(plan.metric, y[score_rows], proba))
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {step + 1}: mean {np.mean(scores):.4f}")
        return float(np.mean(scores))
    except optuna.TrialPruned:
        raise
    except Exception as error:
        record["error"] = f"{type(error).__name__}: {error}"[:500]
        raise
    finally:
        record["seconds"] = time.perf_counter() - started if started is not None else 0.0
        trial.set_user_attr(RECORD, record)  # before tell: a finished trial is frozen


def run_worker(plan: StudyPlan, train: pd.DataFrame, worker: int = 0) -> int:
    """Run trials until the study has `plan.budget` finished trials (complete + pruned) or the
    timeout passes; returns how many this worker ran. Many workers may share one study: a
    trial is only started while finished + running trials are below the budget, and a worker
    that loses that race gives its trial back (FAIL, tagged skipped) instead of overshooting."""
    import optuna
    from optuna.trial import TrialState
    study = open_study(plan, worker)
    X, y = train[list(plan.columns)], train[plan.target].to_numpy()
    deadline = time.monotonic() + plan.timeout_s if plan.timeout_s else math.inf
    ran = failures_in_a_row = 0
    with estimator_threads(plan.threads_per_worker):
        while time.monotonic() < deadline:
            if _claimed(study, math.inf) >= plan.budget:
                break
            trial = study.ask()
            if _claimed(study, trial.number) >= plan.budget:  # another worker claimed the last slot
                trial.set_user_attr(SKIPPED, "budget reached")  # attributes first: a finished trial is frozen
                study.tell(trial, state=TrialState.FAIL)
                break
            try:
                value = cv_objective(trial, plan, X, y, worker)
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
                failures_in_a_row = 0
            except Exception as error:  # one bad parameter combination must not end the study
                study.tell(trial, state=TrialState.FAIL)
                failures_in_a_row += 1
                if failures_in_a_row >= 3:
                    raise RuntimeError(f"3 trials in a row failed; last: {type(error).__name__}: {error}") from error
            else:
                study.tell(trial, value)
                failures_in_a_row = 0
            ran += 1
    return ran


def _claimed(study, below: float) -> int:
    """Trials numbered below `below` that count against the budget: finished or in flight."""
    return sum(t.number < below and t.state.name in (*FINISHED, "RUNNING") for t in study.get_trials(deepcopy=False))


# -- starting workers ---------------------------------------------------------------------------

def _worker_process(plan: StudyPlan, train_path: str, worker: int) -> None:
    _exit_with_parent()
    run_worker(plan, pd.read_pickle(train_path), worker)


def _exit_with_parent() -> None:
    """A spawned worker ends when the process that started it does, even by SIGKILL: an orphan
    would go on drawing trials into a study that a rerun is resuming."""
    import multiprocessing
    import threading

    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True,
                         name="mlpipe-exit-with-parent").start()


class LocalWorkers:
    """Workers 1..N-1 as spawned processes (a fresh interpreter each, so no state is shared by
    accident); worker 0 is the caller's own process, already warm. Start them early, so their
    imports overlap the caller's remaining set-up, then `run` worker 0 and wait for the rest.
    Progress is the caller's business: it reads the study storage meanwhile."""

    def __init__(self, plan: StudyPlan, train: pd.DataFrame, workers: int):
        import multiprocessing

        self.plan, self.train = plan, train
        self._folder = tempfile.TemporaryDirectory(prefix="mlpipe-tune-")
        train_path = str(Path(self._folder.name) / "train.pkl")
        train.to_pickle(train_path)
        context = multiprocessing.get_context("spawn")
        self.processes = [context.Process(target=_worker_process, args=(plan, train_path, i), daemon=True,
                                          name=f"mlpipe-tune-worker-{i}") for i in range(1, workers)]
        for process in self.processes:
            process.start()

    def run(self) -> None:
        try:
            run_worker(self.plan, self.train, 0)
            for process in self.processes:
                process.join()
        finally:
            self.stop()  # if worker 0 failed or was interrupted: do not leave the others running
        failed = [p.exitcode for p in self.processes if p.exitcode]
        if failed:
            raise RuntimeError(f"{len(failed)} tuning worker(s) exited with codes {failed}")

    def stop(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join()
        self._folder.cleanup()


# -- a tuning worker as a Ray task (dispatched by mlpipe.stages.tuning) ---------------------------------

def tuning_worker(plan: StudyPlan, worker: int, train: pd.DataFrame) -> int:
    return run_worker(plan, train, worker)
