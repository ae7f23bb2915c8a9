"""The `tune` flow: an Optuna study over the configured search space, on its own."""

from __future__ import annotations

from prefect import flow

from tasks.caching import cached, step_key
from tasks.config import PipelineConfig
from tasks.data import fingerprint_task, load_task, split_task
from tasks.families import AUTO
from tasks.training import candidate_families, features_task, select_model_task
from tasks.tuning import TuningResult, tune_task
from tasks.validation import validate_task


@flow(name="tune", log_prints=True, validate_parameters=True)
def tune(config: PipelineConfig, refresh: bool = False) -> TuningResult:
    """Search the model family's hyperparameters with Optuna (stratified CV on the train split).

    load -> validate -> split -> features -> [select model] -> tune. With `model.family: auto`
    the study tunes the family that cross-validates best (never a blend). The study lives in
    Optuna RDB storage and resumes after an interruption; every trial is a nested MLflow run
    under the study's run.
    """
    step = lambda task: cached(task, config.cache, refresh)  # noqa: E731

    fingerprint = fingerprint_task(config.data)
    raw = step(load_task)(fingerprint, config.data.format, config.data.csv)
    data = step(validate_task)(raw, fingerprint, config.data, config.min_class_rows())
    train_rows = split_task(data, config.split).train
    data_key = step_key(fingerprint, config.data, config.split, config.features)
    spec, preprocessor = step(features_task)(data.report.numeric_features, data.report.categorical_features,
                                             config.features, data_key)
    if config.model.family == AUTO:
        selection = step(select_model_task)(train_rows, data.target, spec, preprocessor, config.model,
                                            config.promotion.metric, config.evaluation.cv_folds,
                                            candidate_families(config.model), allow_blend=False,
                                            data_key=data_key, max_rows=config.evaluation.cv_max_rows)
        config = config.with_model(selection.model)
    return step(tune_task)(train_rows, data.target, spec, preprocessor, config.model, config.tuning,
                           config.tracking.experiment, str(fingerprint), data_key)
