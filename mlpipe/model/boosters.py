"""The `xgboost` and `lightgbm` model families: each library's booster as a scikit-learn classifier.

The fitted estimator holds the booster in the library's own model format (XGBoost's UBJSON
bytes, LightGBM's model text), never a pickle: skops saves it as plain bytes or text inside the
registered model (conform -> features -> booster), and loading rebuilds the booster from them
on the first predict. This module imports numpy and scikit-learn only; the library is imported
when fitting or predicting, and a registered model lists it among its pip requirements.

Threads: `n_jobs` (None: the cap of `booster_threads`, which `compute.threads` sets around
every fit and predict of this process, else the library's default of every core). The
libraries' OpenMP runtimes are not all the one threadpoolctl caps, so the count is passed to
them explicitly.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from contextlib import contextmanager
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

# The distribution each estimator needs to load and predict (a registered model's pip requirements).
REQUIREMENTS = {"XGBoostClassifier": "xgboost", "LightGBMClassifier": "lightgbm"}

_cap = threading.local()


@contextmanager
def booster_threads(threads: int | None):
    """Within the block (this thread), boosters fitted or predicting with `n_jobs=None` use
    `threads` threads; None leaves the library's default."""
    previous = getattr(_cap, "threads", None)
    _cap.threads = threads
    try:
        yield
    finally:
        _cap.threads = previous


def _threads(n_jobs: int | None) -> int | None:
    return n_jobs if n_jobs is not None else getattr(_cap, "threads", None)


def _matrix(X):
    """Rows as the libraries take them: a CSR matrix stays sparse, anything else a float64 array."""
    if hasattr(X, "tocsr"):
        return X.tocsr()
    return np.asarray(X, dtype="float64")


class _Booster(ClassifierMixin, BaseEstimator):
    """What both families share: binary classes, the optional early-stopping share, the loaded
    booster cached outside the saved state."""

    _shared_constraints: dict = {
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "subsample": [Interval(Real, 0, 1, closed="right")],
        "colsample_bytree": [Interval(Real, 0, 1, closed="right")],
        "reg_lambda": [Interval(Real, 0, None, closed="left")],
        "reg_alpha": [Interval(Real, 0, None, closed="left")],
        "max_bin": [Interval(Integral, 2, None, closed="left")],
        "early_stopping_rounds": [Interval(Integral, 1, None, closed="left"), None],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_jobs": [Interval(Integral, 1, None, closed="left"), None],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "max_failures": [Interval(Integral, 0, None, closed="left")],
        "storage_path": [str, None],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def fit(self, X, y):
        self._validate_params()
        X, y = _matrix(X), np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"{type(self).__name__} is binary; got {len(self.classes_)} classes")
        target = (y == self.classes_[1]).astype("float64")
        validation = None
        if self.early_stopping_rounds is not None:
            fit_rows, val_rows = train_test_split(np.arange(X.shape[0]), test_size=self.validation_fraction,
                                                  stratify=target, random_state=self.random_state)
            validation = (X[val_rows], target[val_rows])
            X, target = X[fit_rows], target[fit_rows]
        if self.num_workers:
            self.booster_, self.best_iteration_ = self._fit_on_ray(X, target, validation)
        else:
            self.booster_, self.best_iteration_ = self._train(X, target, validation, _threads(self.n_jobs))
            self.ray_job_id_, self.ray_train_run_ = "", {}
        self.n_features_in_ = X.shape[1]
        self.__dict__.pop("_loaded", None)
        return self

    def _fit_on_ray(self, X, target, validation) -> tuple[bytes | str, int]:
        """Ray Train's trainer of the library on `num_workers` workers, each on its shard of the
        rows (a Ray Dataset); early stopping on the validation share's shards."""
        frames = {"train": _labelled(X, target)}
        if validation:
            frames["validation"] = _labelled(*validation)
        return self._train_on_ray(frames, X.shape[1])

    def fit_datasets(self, datasets: dict, n_features: int, cpus_per_worker: float = 1.0):
        """Fit on Ray Train's `num_workers` workers from Ray Datasets (`train`, and `validation`
        for early stopping) whose rows are the feature columns f0..f{n_features-1} and `LABEL`
        (0/1), read and transformed block by block: the rows never pass through this process.
        The fitted estimator is the one `fit` gives (classes 0 and 1)."""
        self._validate_params()
        if not self.num_workers:
            raise ValueError("fit_datasets trains on Ray Train: set num_workers")
        self.classes_ = np.array([0, 1])
        self.booster_, self.best_iteration_ = self._train_on_ray(datasets, n_features, cpus_per_worker)
        self.n_features_in_ = int(n_features)
        self.__dict__.pop("_loaded", None)
        return self

    def _train_on_ray(self, frames: dict, n_features: int, cpus_per_worker: float = 1.0) -> tuple[bytes | str, int]:
        """Ray Train's run over `frames` (name -> a frame or a Ray Dataset of `n_features` feature
        columns and LABEL): the saved booster. XGBoost's workers stop early on their validation
        shards (its metrics are all-reduced); LightGBM's each read the validation rows whole."""
        from mlpipe.adapters import ray_cluster

        validation = "validation" in frames
        session = ray_cluster.connect()
        folder = self.storage_path or tempfile.mkdtemp(prefix="mlpipe-ray-train-")
        config = {"library": self._library, "params": self.booster_params(self.n_jobs),
                  "rounds": int(self.n_estimators), "frequency": max(10, int(self.n_estimators) // 5),
                  "early_stopping_rounds": self.early_stopping_rounds if validation else None,
                  "n_features": int(n_features)}
        try:
            run = ray_cluster.run_booster_training(
                self._library, _booster_worker, config, frames, num_workers=int(self.num_workers),
                use_gpu=bool(getattr(self, "use_gpu", False)),
                storage_path=folder if "://" in folder else str(Path(folder).resolve()),
                name=f"{self._library}-{uuid.uuid4().hex[:8]}", max_failures=int(self.max_failures),
                cpus_per_worker=cpus_per_worker, whole=("validation",) if self._library == "lightgbm" else ())
            booster = ray_cluster.booster_from_checkpoint(self._library, run.result.checkpoint)
        finally:
            if self.storage_path is None:
                shutil.rmtree(folder, ignore_errors=True)
        self.ray_job_id_ = session.job_id
        self.ray_train_run_ = {**run.tags(), "restart_causes": list(run.restarts)}
        return self._saved(booster, stopped_early=bool(validation))

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "booster_")
        positive = np.asarray(self._positive(_matrix(X), _threads(self.n_jobs)), dtype="float64")
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]

    def _loaded_booster(self):
        """The library's booster, rebuilt from the saved model once per loaded estimator."""
        if "_loaded" not in self.__dict__:
            self.__dict__["_loaded"] = self._load()
        return self.__dict__["_loaded"]

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: BaseEstimator's is the live __dict__ itself
        state.pop("_loaded", None)  # the saved model is `booster_`; the live object is rebuilt from it
        return state


class XGBoostClassifier(_Booster):
    """XGBoost's `hist` trees on the binary logistic loss.

    Fitted: `booster_` (the model as UBJSON bytes), `best_iteration_` (the last round kept:
    the best on the validation share with `early_stopping_rounds`, else the last), `classes_`.
    use_gpu: train on the GPU (`device="cuda"`); predicting runs on the CPU wherever it loads.
    """

    _parameter_constraints: dict = {
        **_Booster._shared_constraints,
        "max_depth": [Interval(Integral, 0, None, closed="left")],
        "min_child_weight": [Interval(Real, 0, None, closed="left")],
        "use_gpu": ["boolean"],
    }

    def __init__(self, n_estimators: int = 300, learning_rate: float = 0.05, max_depth: int = 6,
                 min_child_weight: float = 1.0, subsample: float = 1.0, colsample_bytree: float = 1.0,
                 reg_lambda: float = 1.0, reg_alpha: float = 0.0, max_bin: int = 256,
                 early_stopping_rounds: int | None = None, validation_fraction: float = 0.1,
                 n_jobs: int | None = None, use_gpu: bool = False, num_workers: int = 0, max_failures: int = 2,
                 storage_path: str | None = None, random_state: int = 42):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.reg_alpha = reg_alpha
        self.max_bin = max_bin
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.n_jobs = n_jobs
        self.use_gpu = use_gpu
        self.num_workers = num_workers
        self.max_failures = max_failures
        self.storage_path = storage_path
        self.random_state = random_state

    def booster_params(self, threads: int | None) -> dict:
        """XGBoost's training parameters (also what Ray Train's XGBoost workers train with)."""
        params = {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
                  "eta": float(self.learning_rate), "max_depth": int(self.max_depth),
                  "min_child_weight": float(self.min_child_weight), "subsample": float(self.subsample),
                  "colsample_bytree": float(self.colsample_bytree), "lambda": float(self.reg_lambda),
                  "alpha": float(self.reg_alpha), "max_bin": int(self.max_bin), "seed": int(self.random_state),
                  "device": "cuda" if self.use_gpu else "cpu", "verbosity": 0}
        if threads is not None:
            params["nthread"] = int(threads)
        return params

    def _train(self, X, target, validation, threads):
        import xgboost

        train = xgboost.DMatrix(X, label=target, nthread=threads or -1)
        evals = [(xgboost.DMatrix(validation[0], label=validation[1], nthread=threads or -1), "validation")] \
            if validation else []
        booster = xgboost.train(self.booster_params(threads), train, num_boost_round=int(self.n_estimators),
                                evals=evals, early_stopping_rounds=self.early_stopping_rounds, verbose_eval=False)
        return self._saved(booster, stopped_early=bool(validation))

    _library = "xgboost"

    @staticmethod
    def _saved(booster, stopped_early: bool) -> tuple[bytes, int]:
        """The model to keep (rounds up to the best one on validation: it predicts as it was
        chosen) as UBJSON bytes, and that best round."""
        best = int(booster.attr("best_iteration") or booster.num_boosted_rounds() - 1) if stopped_early \
            else booster.num_boosted_rounds() - 1
        return bytes(booster[: best + 1].save_raw("ubj")), best

    def _load(self):
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(bytearray(self.booster_))
        booster.set_param({"device": "cpu"})
        return booster

    def _positive(self, X, threads):
        import xgboost

        booster = self._loaded_booster()
        if threads is not None:
            booster.set_param({"nthread": int(threads)})
        return booster.predict(xgboost.DMatrix(X, nthread=threads or -1), validate_features=False)


class LightGBMClassifier(_Booster):
    """LightGBM's leaf-wise trees on the binary log loss.

    Fitted: `booster_` (the model as LightGBM's text format), `best_iteration_` (as for
    XGBoost), `classes_`. Trains deterministically (`deterministic`, row-wise histograms).
    """

    _parameter_constraints: dict = {
        **_Booster._shared_constraints,
        "num_leaves": [Interval(Integral, 2, None, closed="left")],
        "min_child_samples": [Interval(Integral, 1, None, closed="left")],
        "subsample_freq": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, n_estimators: int = 300, learning_rate: float = 0.05, num_leaves: int = 31,
                 min_child_samples: int = 20, subsample: float = 1.0, subsample_freq: int = 0,
                 colsample_bytree: float = 1.0, reg_lambda: float = 0.0, reg_alpha: float = 0.0, max_bin: int = 255,
                 early_stopping_rounds: int | None = None, validation_fraction: float = 0.1,
                 n_jobs: int | None = None, num_workers: int = 0, max_failures: int = 2,
                 storage_path: str | None = None, random_state: int = 42):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.subsample_freq = subsample_freq
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.reg_alpha = reg_alpha
        self.max_bin = max_bin
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.n_jobs = n_jobs
        self.num_workers = num_workers
        self.max_failures = max_failures
        self.storage_path = storage_path
        self.random_state = random_state

    def booster_params(self, threads: int | None) -> dict:
        """LightGBM's training parameters (also what Ray Train's LightGBM workers train with)."""
        return {"objective": "binary", "metric": "binary_logloss", "learning_rate": float(self.learning_rate),
                "num_leaves": int(self.num_leaves), "min_child_samples": int(self.min_child_samples),
                "bagging_fraction": float(self.subsample), "bagging_freq": int(self.subsample_freq),
                "feature_fraction": float(self.colsample_bytree), "lambda_l2": float(self.reg_lambda),
                "lambda_l1": float(self.reg_alpha), "max_bin": int(self.max_bin), "seed": int(self.random_state),
                "deterministic": True, "force_row_wise": True, "num_threads": int(threads or 0), "verbosity": -1}

    def _train(self, X, target, validation, threads):
        import lightgbm

        params = self.booster_params(threads)
        train = lightgbm.Dataset(X, label=target, params={"max_bin": params["max_bin"], "verbosity": -1})
        valid_sets, callbacks = [], []
        if validation:
            valid_sets = [lightgbm.Dataset(validation[0], label=validation[1], reference=train)]
            callbacks = [lightgbm.early_stopping(int(self.early_stopping_rounds), verbose=False)]
        booster = lightgbm.train(params, train, num_boost_round=int(self.n_estimators), valid_sets=valid_sets,
                                 callbacks=callbacks)
        return self._saved(booster, stopped_early=bool(validation))

    _library = "lightgbm"

    @staticmethod
    def _saved(booster, stopped_early: bool) -> tuple[str, int]:
        """The model to keep (iterations up to the best one on validation) as LightGBM's text,
        and that best iteration. A booster from a Ray Train checkpoint is already cut there."""
        stopped = stopped_early and booster.best_iteration > 0
        best = booster.best_iteration - 1 if stopped else booster.current_iteration() - 1
        return booster.model_to_string(num_iteration=best + 1), int(best)

    def _load(self):
        import lightgbm

        return lightgbm.Booster(model_str=self.booster_)

    def _positive(self, X, threads):
        return self._loaded_booster().predict(X, num_threads=int(threads or 0))


# -- Ray Train (num_workers > 0): each worker trains on its shard of a Ray Dataset -----------------

LABEL = "__label__"


def _labelled(X, target):
    """Feature rows and their 0/1 target as one frame, the shape a Ray Dataset is made of."""
    import pandas as pd

    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X, dtype="float64")
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame[LABEL] = np.asarray(target, dtype="float64")
    return frame


def _booster_worker(config: dict) -> None:
    """One Ray Train worker: its shards of `train` (and `validation`: LightGBM's workers read it
    whole), resumed from the latest checkpoint's booster, reporting and checkpointing every
    `frequency` rounds. The rows arrive as float32 batches and stay batches: XGBoost bins them
    through an iterator (QuantileDMatrix: no float copy of the shard is kept), LightGBM takes the
    list of arrays."""
    from mlpipe.adapters import ray_cluster

    library, width, stopping = config["library"], int(config["n_features"]), config["early_stopping_rounds"]
    train = ray_cluster.dataset_shard_chunks("train", LABEL) or [_no_rows(width)]
    validation = (ray_cluster.dataset_shard_chunks("validation", LABEL) or [_no_rows(width)]) if stopping else None
    start = ray_cluster.latest_booster(library)
    callback = ray_cluster.booster_report_callback(library, config["frequency"])
    if library == "xgboost":
        import xgboost

        params = config["params"]
        train_matrix = xgboost.QuantileDMatrix(_batch_iterator(train), max_bin=params["max_bin"],
                                               nthread=params.get("nthread", -1))
        evals = [(xgboost.QuantileDMatrix(_batch_iterator(validation), ref=train_matrix), "validation")] \
            if validation is not None else []
        del train, validation  # binned: the float batches are no longer needed
        done = start.num_boosted_rounds() if start is not None else 0
        xgboost.train(params, train_matrix, num_boost_round=max(config["rounds"] - done, 1), evals=evals,
                      early_stopping_rounds=stopping, xgb_model=start, callbacks=[callback], verbose_eval=False)
        return
    import lightgbm

    params = {**config["params"], "tree_learner": "data_parallel", "pre_partition": True,
              **ray_cluster.lightgbm_network_params()}
    train_set = _lightgbm_dataset(lightgbm, train, None)
    valid_sets = [_lightgbm_dataset(lightgbm, validation, train_set)] if validation is not None else []
    callbacks = [callback, *([lightgbm.early_stopping(int(stopping), verbose=False)] if stopping else [])]
    done = start.current_iteration() if start is not None else 0
    booster = lightgbm.train(params, train_set, num_boost_round=max(config["rounds"] - done, 1),
                             valid_sets=valid_sets, init_model=start, callbacks=callbacks)
    if stopping:  # the run's last checkpoint: the booster up to its best iteration
        ray_cluster.report_final_lightgbm(booster)


def _no_rows(width: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch of no rows, for a worker whose shard is empty."""
    return np.empty((0, width), dtype="float32"), np.empty(0, dtype="float32")


def _lightgbm_dataset(lightgbm, batches: list, reference):
    features = [X for X, _ in batches if len(X)] or [batches[0][0]]
    return lightgbm.Dataset(features if len(features) > 1 else features[0],
                            label=np.concatenate([y for _, y in batches]), reference=reference)


def _batch_iterator(batches: list):
    """XGBoost's DataIter over a list of (features, label) batches (xgboost is imported here,
    inside a worker)."""
    import xgboost

    class Batches(xgboost.DataIter):
        def __init__(self):
            self._at = 0
            super().__init__(release_data=True)

        def next(self, input_data) -> bool:
            if self._at == len(batches):
                return False
            features, label = batches[self._at]
            input_data(data=features, label=label)
            self._at += 1
            return True

        def reset(self) -> None:
            self._at = 0

    return Batches()
