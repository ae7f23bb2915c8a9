"""mlpipe.compute.evaluation_units: one CV fold and one column's permutation importance, the units both
compute backends run, equal to scikit-learn's own cross_val_score and permutation_importance."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlpipe.compute.evaluation_units import column_importance, column_importances, fold_score, fold_scores, in_process


def _data(n: int = 300):
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "noise": rng.normal(size=n)})
    y = (X["a"] - 0.5 * X["b"] + rng.normal(0, 0.7, n) > 0).astype(int).to_numpy()
    return X, y


def _model():
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.3))


@pytest.mark.parametrize("seed", [0, 42])
def test_column_importance_equals_sklearn_permutation_importance(seed):
    X, y = _data()
    model = _model().fit(X, y)
    expected = permutation_importance(model, X, y, scoring="roc_auc", n_repeats=4, random_state=seed,
                                      n_jobs=1).importances_mean
    ours = [column_importance(column, model, X, y, 4, seed) for column in range(X.shape[1])]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)  # areas from ranks, not trapezoids
    assert ours[0] > 0.1 and abs(ours[2]) < 0.05  # the signal column matters, noise does not
    assert column_importances(model, X, y, 4, seed) == ours


def test_fold_scores_equal_cross_val_score():
    X, y = _data()
    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=7)
    expected = cross_val_score(_model(), X, y, cv=folds, scoring="roc_auc")
    np.testing.assert_array_equal(fold_scores(_model(), X, y, 4, 7), expected)
    assert fold_score(_model(), 2, X, y, 4, 7) == expected[2]
    assert fold_scores(_model(), X, y, 4, 8) != list(expected)  # another seed, other folds


def test_in_process_turns_off_data_parallel_training_only_where_the_model_has_it():
    from sklearn.base import BaseEstimator

    class Parallel(BaseEstimator):
        def __init__(self, num_workers=2):
            self.num_workers = num_workers

    from sklearn.pipeline import Pipeline

    assert in_process(Pipeline([("model", Parallel())])).get_params()["model__num_workers"] == 0
    plain = in_process(Pipeline([("model", LogisticRegression(C=2.0))]))
    assert plain.get_params()["model__C"] == 2.0


def test_estimator_threads_caps_openmp_and_blas_inside_and_restores_them():
    from threadpoolctl import threadpool_info

    from mlpipe.compute.evaluation_units import estimator_threads

    def threads() -> dict[str, int]:
        return {pool["user_api"]: pool["num_threads"] for pool in threadpool_info()}

    before = threads()
    assert "openmp" in before  # scikit-learn's OpenMP runtime (HistGradientBoosting) is loaded
    with estimator_threads(1):
        assert set(threads().values()) == {1}
    assert threads() == before


def test_the_default_threads_are_the_cores_free_now(monkeypatch):
    from threadpoolctl import threadpool_info

    from mlpipe.compute.evaluation_units import estimator_threads, free_cores, threads_now

    assert free_cores(8, load=1.0) == 8  # only this process busy: every core
    assert free_cores(8, load=5.2) == 4  # four other busy processes (and some): the rest
    assert free_cores(2, load=6.0) == 1 and free_cores(8, load=1.0, runs=4) == 2
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert 1 <= threads_now() <= len(os.sched_getaffinity(0))
    monkeypatch.setenv("MLPIPE_PARALLEL_RUNS", str(len(os.sched_getaffinity(0))))  # a share of one core each
    with estimator_threads(None):
        assert {pool["num_threads"] for pool in threadpool_info()} == {1}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads_now() is None  # set by the user (or a test worker): left to OpenMP


def test_the_cores_free_are_read_from_the_run_queue_now_not_the_lagging_load_average():
    import subprocess
    import sys
    import time

    from mlpipe.compute import evaluation_units
    from mlpipe.compute.evaluation_units import running_now

    evaluation_units._LAST_LOOK.clear()
    assert running_now() >= 1.0  # this thread, reading
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.1)  # past the second one look serves
        assert running_now(looks=5) >= 2.0  # the spinning process is seen at once, not a minute later
    finally:
        busy.kill()
        busy.wait()


def test_this_process_own_busy_threads_are_not_taken_for_other_work():
    """At a task's start Prefect's log and event threads run beside the fit's thread: they are
    this process, not other work, and must not halve the fit's threads (they did: 1 of 2)."""
    import hashlib
    import threading

    from mlpipe.compute.evaluation_units import _own_running

    stop = threading.Event()
    data = b"x" * 50_000_000

    def hashing():  # hashlib lets go of the GIL on big inputs: this thread runs beside the test's
        while not stop.is_set():
            hashlib.sha256(data).digest()

    worker = threading.Thread(target=hashing, daemon=True)
    worker.start()
    try:
        assert max(_own_running() for _ in range(50)) >= 2  # the hashing thread and this one
    finally:
        stop.set()
        worker.join()
    assert _own_running() >= 1  # this thread, reading
