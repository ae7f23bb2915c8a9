"""Model families and fitting: one sklearn Pipeline (features + estimator), seeded."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tasks.caching import STEP_CACHE
from tasks.config import FeaturesConfig, ModelConfig
from tasks.features import FeatureSpec, build_preprocessor, feature_spec, model_pipeline
from tasks.ray_cluster import is_ray_system_failure

# Defaults that suit tabular data of thousands to millions of rows; config params override them.
_FAMILIES: dict[str, tuple[type, dict[str, Any]]] = {
    "logistic_regression": (LogisticRegression, {"max_iter": 2000, "C": 1.0}),
    "random_forest": (RandomForestClassifier, {"n_estimators": 300, "min_samples_leaf": 3, "n_jobs": 1}),
    "hist_gradient_boosting": (
        HistGradientBoostingClassifier,
        {"learning_rate": 0.05, "max_iter": 300, "max_leaf_nodes": 15, "l2_regularization": 1.0,
         "early_stopping": False},
    ),
}

# -- the mlp family (PyTorch on Ray Train; tasks/mlp.py imports neither until it fits) ----------
# One block so it moves as a unit into a family registry. Config load refuses `mlp` without torch
# (tasks.config.require_torch); an automatic family selection should offer it only when
# `mlp_available()`.
from tasks.mlp import MLPNetClassifier  # noqa: E402

_FAMILIES["mlp"] = (MLPNetClassifier, {"hidden_layers": (64, 32), "epochs": 30, "patience": 5, "num_workers": 2})


def mlp_available() -> bool:
    """Whether torch is installed, so that the mlp family can be trained here."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def estimator_params(family: str) -> list[str]:
    """The parameters `family`'s estimator accepts."""
    return sorted(_FAMILIES[family][0]().get_params())


def check_model_params(family: str, params: dict[str, Any]) -> None:
    """Fail on parameters the estimator does not have or values it refuses, naming the key."""
    if family not in _FAMILIES:
        raise ValueError(f"model.family {family!r} is unknown (allowed: {', '.join(_FAMILIES)})")
    cls, _ = _FAMILIES[family]
    allowed = cls().get_params()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"model.params.{family}.{unknown[0]} is not a parameter of {cls.__name__} "
            f"(allowed: {', '.join(sorted(k for k in allowed if k != 'random_state'))})")
    for key, value in params.items():
        try:
            cls(**{key: value})._validate_params()  # sklearn's own constraint checks, without fitting
        except (ValueError, TypeError) as error:
            raise ValueError(f"model.params.{family}.{key}: {error}") from None


def build_estimator(config: ModelConfig):
    """The unfitted estimator for `config`, seeded."""
    cls, defaults = _FAMILIES[config.family]
    params = {**defaults, **config.active_params}
    if "random_state" in cls().get_params():
        params.setdefault("random_state", config.seed)
    return cls(**params)


def fit_model(train: pd.DataFrame, target: str, spec: FeatureSpec, preprocessor, config: ModelConfig) -> Pipeline:
    """Fit features + estimator as one Pipeline on the train split."""
    pipeline = model_pipeline(spec, clone(preprocessor), build_estimator(config))
    pipeline.fit(train[spec.columns], train[target].to_numpy())
    return pipeline


@task(name="fit", cache_policy=STEP_CACHE - "train" - "preprocessor", persist_result=True,
      cache_result_in_memory=False, retries=1, retry_condition_fn=is_ray_system_failure)
def fit_task(train: pd.DataFrame, target: str, spec: FeatureSpec, preprocessor, config: ModelConfig,
             data_key: str) -> Pipeline:
    """Fit the model; cached on (dataset fingerprint + split + features config, model config).
    A Ray Train run that Ray gave up on (workers lost beyond `max_failures`) is retried once."""
    pipeline = fit_model(train, target, spec, preprocessor, config)
    job = getattr(pipeline[-1], "ray_job_id_", "")
    if job:
        get_run_logger().info("trained on Ray Train, Ray job %s", job)
    return pipeline


@task(name="features", cache_policy=STEP_CACHE, persist_result=True, cache_result_in_memory=False)
def features_task(numeric: list[str], categorical: list[str], config: FeaturesConfig, data_key: str):
    """Decide column roles and build the (unfitted) feature transformer from config."""
    spec = feature_spec(numeric, categorical, config)
    return spec, build_preprocessor(spec, config)


def prepare_data(config):
    """load -> validate -> split -> features as plain function calls, without Prefect: for
    benchmarks and scripts. Returns (train, holdout, spec, preprocessor, fingerprint)."""
    from tasks.data import fingerprint_dataset, read_dataset, split_dataset
    from tasks.validation import validate_dataset

    fingerprint = fingerprint_dataset(config.data.uri)
    validated = validate_dataset(read_dataset(config.data.uri, config.data.format), config.data)
    split = config.split
    train, holdout = split_dataset(validated.frame, validated.target, split.holdout_fraction, split.seed,
                                   split.stratify, split.time_column)
    spec = feature_spec(validated.report.numeric_features, validated.report.categorical_features, config.features)
    return train, holdout, spec, build_preprocessor(spec, config.features), str(fingerprint)
