"""The `tune` flow: an Optuna study over the configured search space, on its own."""

from __future__ import annotations

from mlpipe.flows.preparation import prepare_data, select_model
from mlpipe.tasks.caching import cached_steps
from mlpipe.tasks.ownership import claim_flow_run
from mlpipe.tasks.tuning import tune_task
from prefect import flow

from mlpipe.core.config import PipelineConfig
from mlpipe.stages.tuning import TuningResult


@flow(name="tune", log_prints=True, validate_parameters=True)
def tune(config: PipelineConfig, refresh: bool = False) -> TuningResult:
    """Search the model family's hyperparameters with Optuna (stratified CV on the train split).

    load -> validate -> split -> features -> [select model] -> tune. With `model.family: auto`
    the study tunes the family that cross-validates best (never a blend). The study lives in
    Optuna RDB storage and resumes after an interruption; every trial is a nested MLflow run
    under the study's run.

    Args:
        config: The pipeline's whole configuration, as in conf/churn.yaml; `tuning` says how many
            trials, on which backend, over which search spaces.
        refresh: Recompute every cached step (load, validate, features, select model, tune, fit,
            evaluate) and overwrite its stored result, instead of reusing results keyed on the same
            data, config and code. Off: a rerun on the same data reuses them.
    """
    claim_flow_run()  # label this run with its process; settle what killed processes left
    cached = cached_steps(config.cache, refresh)  # cached(task): results persisted, keyed per task

    prepared = prepare_data(data=config.data, split=config.split, features=config.features,
                            min_class_rows=config.min_class_rows(), cached=cached)
    chosen = select_model(prepared=prepared, config=config, allow_blend=False, cached=cached)  # a study tunes one family
    return cached(tune_task)(train=prepared.split.train, target=prepared.target, spec=prepared.spec,
                             preprocessor=prepared.preprocessor, model=chosen.model, tuning=config.tuning,
                             experiment=config.tracking.experiment, fingerprint=str(prepared.fingerprint),
                             data_key=prepared.data_key)
