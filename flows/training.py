"""The `train` flow: raw data in, a registered and (maybe) promoted model out."""

from __future__ import annotations

from prefect import flow

from tasks.caching import cached, step_key
from tasks.config import PipelineConfig
from tasks.data import fingerprint_task, load_task, split_task
from tasks.evaluation import evaluate_task
from tasks.promotion import promote_task
from tasks.registry import register_task
from tasks.reports import TrainingSummary, report_task
from tasks.training import features_task, fit_task
from tasks.tuning import tune_task
from tasks.validation import validate_task


@flow(name="train", log_prints=True, validate_parameters=True)
def train(config: PipelineConfig, refresh: bool = False) -> TrainingSummary:
    """Train a binary classifier from raw tabular data and register it in MLflow.

    load -> validate -> split -> features -> [tune] -> fit -> evaluate -> register -> promote.
    The new version becomes `champion` only if it passes the gate and is not worse than the
    current champion on the same holdout; otherwise it becomes `challenger`. With
    `tuning.enabled`, an Optuna study picks the model's parameters first. Cached steps key on
    the dataset fingerprint and their config; `refresh` recomputes them.
    """
    step = lambda task: cached(task, config.cache, refresh)  # noqa: E731  (cache options per run)

    fingerprint = fingerprint_task(config.data)
    raw = step(load_task)(fingerprint, config.data.format)
    data = step(validate_task)(raw, fingerprint, config.data, config.min_class_rows())
    train_rows, holdout_rows = split_task(data, config.split)

    data_key = step_key(fingerprint, config.data, config.split, config.features)
    spec, preprocessor = step(features_task)(data.report.numeric_features, data.report.categorical_features,
                                             config.features, data_key)
    tuning_tags = {}
    if config.tuning.enabled:
        tuning = step(tune_task)(train_rows, data.target, spec, preprocessor, config.model, config.tuning,
                                 config.tracking.experiment, str(fingerprint), data_key)
        config, tuning_tags = config.with_model(tuning.model), tuning.tags()
    model = step(fit_task)(train_rows, data.target, spec, preprocessor, config.model, data_key)
    evaluation = step(evaluate_task)(model, train_rows, holdout_rows, data.target, spec, config.evaluation,
                                     config.split.seed, step_key(data_key, config.model), config.compute)

    version = register_task(model, evaluation, holdout_rows, spec.columns, config, fingerprint, data.report,
                            tuning_tags)
    decision = promote_task(version, evaluation, holdout_rows, data.target, spec, config.promotion,
                            config.evaluation.threshold)
    return report_task(version, decision, evaluation.metrics, config.data.uri, fingerprint,
                       data.report.warnings)
