"""The `tune` flow: an Optuna study over the configured search space, on its own."""

from __future__ import annotations

from prefect import flow

from flows.preparation import prepare_data
from tasks.caching import cached_steps
from tasks.config import PipelineConfig
from tasks.families import AUTO
from tasks.training import candidate_families, select_model_task
from tasks.tuning import TuningResult, tune_task


@flow(name="tune", log_prints=True, validate_parameters=True)
def tune(config: PipelineConfig, refresh: bool = False) -> TuningResult:
    """Search the model family's hyperparameters with Optuna (stratified CV on the train split).

    load -> validate -> split -> features -> [select model] -> tune. With `model.family: auto`
    the study tunes the family that cross-validates best (never a blend). The study lives in
    Optuna RDB storage and resumes after an interruption; every trial is a nested MLflow run
    under the study's run.
    """
    cached = cached_steps(config.cache, refresh)  # cached(task): results persisted, keyed per task

    prepared = prepare_data(config, cached)
    train_rows, target = prepared.split.train, prepared.data.target
    spec, preprocessor = prepared.spec, prepared.preprocessor
    if config.model.family == AUTO:
        selection = cached(select_model_task)(train_rows, target, spec, preprocessor, config.model,
                                              config.promotion.metric, config.evaluation.cv_folds,
                                              candidate_families(config.model), allow_blend=False,
                                              data_key=prepared.data_key, max_rows=config.evaluation.cv_max_rows,
                                              threads=config.compute.threads)
        config = config.with_model(selection.model)
    return cached(tune_task)(train_rows, target, spec, preprocessor, config.model, config.tuning,
                             config.tracking.experiment, str(prepared.fingerprint), prepared.data_key)
