"""The `tune` flow: an Optuna study over the configured search space, on its own."""

from __future__ import annotations

from prefect import flow

from tasks.caching import cached, step_key
from tasks.config import PipelineConfig
from tasks.data import fingerprint_task, load_task, split_task
from tasks.training import features_task
from tasks.tuning import TuningResult, tune_task
from tasks.validation import validate_task


@flow(name="tune", log_prints=True, validate_parameters=True)
def tune(config: PipelineConfig, refresh: bool = False) -> TuningResult:
    """Search the model family's hyperparameters with Optuna (stratified CV on the train split).

    load -> validate -> split -> features -> tune. The study lives in Optuna RDB storage and
    resumes after an interruption; every trial is a nested MLflow run under the study's run.
    """
    step = lambda task: cached(task, config.cache, refresh)  # noqa: E731

    fingerprint = fingerprint_task(config.data)
    raw = step(load_task)(fingerprint, config.data.format)
    data = step(validate_task)(raw, fingerprint, config.data, config.min_class_rows())
    train_rows = split_task(data, config.split).train
    data_key = step_key(fingerprint, config.data, config.split, config.features)
    spec, preprocessor = step(features_task)(data.report.numeric_features, data.report.categorical_features,
                                             config.features, data_key)
    return step(tune_task)(train_rows, data.target, spec, preprocessor, config.model, config.tuning,
                           config.tracking.experiment, str(fingerprint), data_key)
