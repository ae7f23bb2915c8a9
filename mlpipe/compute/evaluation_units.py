"""Evaluation's units of work, one function each, run in this process or as Ray tasks.

`fold_score` scores one stratified CV fold, `column_importance` permutes one column. The local
and the Ray backend call the very same functions with the same seeds, so their results are equal
by construction; only where they run differs. The module imports numpy, pandas, SciPy,
scikit-learn and the modules registered models ship with (through `mlpipe.compute.permutation`), so a
Ray worker that unpickles these functions loads no Prefect, MLflow or matplotlib.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import check_scoring
from sklearn.model_selection import StratifiedKFold

from mlpipe.compute.permutation import HoldoutFeatures, shuffled_copies
from mlpipe.model.boosters import booster_threads

# How a caller runs many units elsewhere: `run_tasks(fn, calls, *, shared, what)` calls
# `fn(*call, **shared)` for each call and returns the results in order (the Ray adapter's
# `run_tasks` does, as Ray tasks). Units of work never import an adapter: the caller passes it.
RunTasks = Callable[..., list]
from mlpipe.core.metrics import ranked_roc_auc

SCORING = "roc_auc"


RUNS_VARIABLE = "MLPIPE_PARALLEL_RUNS"  # how many runs share this machine (a worker's concurrency limit)


def free_cores(cores: int, load: float, runs: int = 1) -> int:
    """Threads a fit may use without spinning against other work: the `cores` this process may
    run on, less what else keeps them busy (`load`: threads running now, of which this process
    is about 1), and at most an equal share when `runs` runs share the machine; at least 1."""
    free = int(cores - max(load - 1.0, 0.0) + 0.5)
    return max(1, min(free, cores // max(runs, 1)))


_LAST_LOOK: list[float] = []  # [time, running]: one look serves the fits of the next second


def running_now(looks: int = 12, apart_s: float = 0.01) -> float | None:
    """Threads running or ready to run on this machine now, counting this process as 1: the
    kernel's run queue (the fourth field of /proc/loadavg) less this process's own runnable
    threads, the least of up to `looks` looks 10 ms apart (the first that sees no other work
    ends it). Not the 1-minute load average, which lags: a run that starts right after another
    saw the last one's load. Not the run queue alone either, nor one instant: at a task's start
    Prefect's log and event threads in this process, and the local Prefect server answering
    them, are runnable for up to ~70 ms, and on a quiet 2-core machine every fit of a train went
    on 1 thread. None where /proc is not there. Looked at once a second at most: evaluation
    asks before each of its many small fits."""
    if _LAST_LOOK and time.monotonic() - _LAST_LOOK[0] < 1.0:
        return _LAST_LOOK[1]
    counts = []
    try:
        for look in range(looks):
            with open("/proc/loadavg", encoding="ascii") as loadavg:
                running = int(loadavg.read().split()[3].split("/")[0])
            counts.append(max(running - _own_running(), 0) + 1)
            if counts[-1] <= 1 or look == looks - 1:
                break
            time.sleep(apart_s)
    except (OSError, ValueError, IndexError):
        return None
    _LAST_LOOK[:] = [time.monotonic(), float(min(counts))]
    return _LAST_LOOK[1]


def _own_running() -> int:
    """This process's threads that are running or runnable now (state R in /proc/self/task)."""
    count = 0
    for thread in os.scandir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{thread.name}/stat", "rb") as stat:
                count += stat.read().rsplit(b")", 1)[1].split()[0] == b"R"
        except (OSError, IndexError):
            continue  # the thread ended meanwhile
    return count


def threads_now() -> int | None:
    """`free_cores` of this machine now; None (no cap) when OMP_NUM_THREADS says how many."""
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = running_now()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    runs = os.environ.get(RUNS_VARIABLE, "1").strip()
    return free_cores(cores, load, int(runs) if runs.isdigit() else 1)


@contextlib.contextmanager
def estimator_threads(threads: int | None) -> Iterator[None]:
    """Cap the OpenMP and BLAS threads of fits and predicts run inside at `threads`
    (`compute.threads`; None: the cores free now, `threads_now`, unless OMP_NUM_THREADS is set).
    Entered in the thread that does the work: an OpenMP cap is per thread. The xgboost and
    lightgbm families take the count as a parameter (`booster_threads`): their libraries load
    their own OpenMP runtime on first use, after threadpoolctl set its caps."""
    threads = threads_now() if threads is None else threads
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads), booster_threads(threads):
        yield


def in_process(model):
    """`model` (unfitted) with its own data-parallel training turned off: a CV fold is already
    one unit of parallel work, and starting a Ray Train run per fold would cost more than it
    trains (the mlp family's `num_workers=0` trains with torch in the calling process)."""
    model = clone(model)
    if "model__num_workers" in model.get_params():
        model.set_params(model__num_workers=0)
    return model


def fold_score(model, fold: int, X: pd.DataFrame, y: np.ndarray, n_splits: int, seed: int) -> float:
    """roc_auc of `model`'s recipe fitted on all folds but `fold` and scored on `fold`: the
    number `cross_val_score(model, X, y, cv=StratifiedKFold(n_splits, shuffle=True,
    random_state=seed), scoring="roc_auc")` gives for that fold."""
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fit_rows, score_rows = list(folds.split(X, y))[fold]
    fitted = in_process(model).fit(X.iloc[fit_rows], y[fit_rows])
    return float(check_scoring(fitted, scoring=SCORING)(fitted, X.iloc[score_rows], y[score_rows]))


def permutation_seed(seed: int) -> int:
    """The per-column seed scikit-learn's `permutation_importance(random_state=seed)` draws."""
    return int(np.random.RandomState(seed).randint(np.iinfo(np.int32).max + 1))


def shuffle_orders(n_rows: int, n_repeats: int, seed: int) -> list[np.ndarray]:
    """The row order of each of `n_repeats` shuffles of one column, as scikit-learn's
    `permutation_importance(random_state=seed)` draws them: each repeat shuffles the previous
    repeat's column again, so repeat r takes its values from rows `orders[r]` of the original."""
    rng = np.random.RandomState(permutation_seed(seed))
    order = np.arange(n_rows)
    taken = np.arange(n_rows)
    orders = []
    for _ in range(n_repeats):
        rng.shuffle(order)
        taken = taken[order]
        orders.append(taken)
    return orders


def column_importance(column: int, model, X: pd.DataFrame, y: np.ndarray, n_repeats: int, seed: int,
                      baseline: np.ndarray | None = None, features: HoldoutFeatures | None = None) -> float:
    """Mean drop in roc_auc over `n_repeats` shuffles of column `column` of the holdout: equal,
    to rounding, to `permutation_importance(model, X, y, scoring="roc_auc", n_repeats=n_repeats,
    random_state=seed).importances_mean[column]` (same shuffles, same order). The shuffled copies
    are stacked and scored in one `predict_proba`. `features`: the holdout's feature matrix,
    computed once (`HoldoutFeatures.of(model, X)`), from which the copies are scored without
    running the model's feature steps again (the same probabilities); without it, the copies go
    through the whole model. `baseline`: the model's positive-class probabilities on `X` as it
    is, which every column shares (computed here when not given)."""
    orders = shuffle_orders(len(X), n_repeats, seed)
    if features is not None:
        positive = features.proba(X.columns[column], orders)
        if baseline is None:
            baseline = features.baseline()
    else:
        if baseline is None:
            baseline = model.predict_proba(X)[:, 1]
        positive = model.predict_proba(shuffled_copies(X, X.columns[column], orders))[:, 1]  # the roc_auc scorer's positive class, classes_[1]
    scores = [ranked_roc_auc(y, part) for part in np.split(positive, n_repeats)]
    return float(np.mean(ranked_roc_auc(y, baseline) - np.asarray(scores)))


def fold_scores(model, X: pd.DataFrame, y: np.ndarray, n_splits: int, seed: int,
                run_tasks: RunTasks | None = None) -> list[float]:
    """Every fold's `fold_score`, in fold order. `run_tasks` (the Ray adapter's, say) runs one
    task per fold with X and y shared once; without it the folds run in this process."""
    if run_tasks is not None:
        return run_tasks(fold_score, [(model, fold) for fold in range(n_splits)],
                         shared={"X": X, "y": y, "n_splits": n_splits, "seed": seed}, what="cross-validation folds")
    return [fold_score(model, fold, X, y, n_splits, seed) for fold in range(n_splits)]


def column_importances(model, X: pd.DataFrame, y: np.ndarray, n_repeats: int, seed: int,
                       run_tasks: RunTasks | None = None) -> list[float]:
    """Every column's `column_importance`, in column order; with `run_tasks`, one task per
    column, the fitted model and the holdout shared once. The holdout's features and its
    unshuffled probabilities are computed once for all columns."""
    features = HoldoutFeatures.of(model, X)
    baseline = features.baseline() if features is not None else model.predict_proba(X)[:, 1]
    if run_tasks is not None:
        return run_tasks(column_importance, [(column,) for column in range(X.shape[1])],
                         shared={"model": model, "X": X, "y": y, "n_repeats": n_repeats, "seed": seed,
                                 "baseline": baseline, "features": features}, what="permutation importance")
    return [column_importance(column, model, X, y, n_repeats, seed, baseline, features)
            for column in range(X.shape[1])]
