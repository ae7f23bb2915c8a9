"""The `train` flow: raw data in, a registered and (maybe) promoted model out."""

from __future__ import annotations

from dataclasses import replace

from prefect import flow

from flows.preparation import prepare_data
from tasks.caching import cached_steps, step_key
from tasks.config import PipelineConfig
from tasks.data import resolve_data_task
from tasks.evaluation import evaluate_task
from tasks.families import AUTO
from tasks.memory import empty_like
from tasks.promotion import promote_task
from tasks.registration import register_task
from tasks.reports import TrainingSummary, model_card_task, report_task
from tasks.training import candidate_families, fit_task, select_model_task
from tasks.tuning import tune_task


@flow(name="train", log_prints=True, validate_parameters=True)
def train(config: PipelineConfig, refresh: bool = False) -> TrainingSummary:
    """Train a binary classifier from raw tabular data and register it in MLflow.

    load -> validate -> split -> features -> [select model] -> [tune] -> fit -> evaluate ->
    register -> promote -> model card. A `data.uri` ending in `/` is a prefix of snapshots: the
    newest object under it is used. With `model.family: auto`, the candidate families are
    cross-validated on the train split and the best (or a blend of the top two) is fitted. The
    split is hash-stable (a row keeps its side in every snapshot), so the new version becomes
    `champion` only if it passes the gate and is not worse than the current champion on holdout
    rows that neither model trained on; otherwise it becomes `challenger`. Each version's
    registry description is a model card. With `tuning.enabled`, an Optuna study picks the
    chosen family's parameters first. Cached steps key on the dataset fingerprint and their
    config; `refresh` recomputes them.
    """
    cached = cached_steps(config.cache, refresh)  # cached(task): results persisted, keyed per task

    source = resolve_data_task(config.data)  # a prefix (`.../`): its newest object
    config = config.with_data(source.data)
    prepared = prepare_data(config, cached)  # fingerprint -> load -> validate -> split -> features
    data, split, fingerprint, data_key = prepared.data, prepared.split, prepared.fingerprint, prepared.data_key
    spec, preprocessor, release = prepared.spec, prepared.preprocessor, prepared.release
    train_rows, holdout_rows = split.train, split.holdout

    selection_tags, tables, cv_scores = {}, {}, None
    if config.model.family == AUTO:  # CV of the candidates on the train split; a study tunes one family
        selection = cached(select_model_task)(train_rows, data.target, spec, preprocessor, config.model,
                                              config.promotion.metric, config.evaluation.cv_folds,
                                              candidate_families(config.model),
                                              allow_blend=not config.tuning.enabled, data_key=data_key,
                                              max_rows=config.evaluation.cv_max_rows, threads=config.compute.threads)
        config, selection_tags = config.with_model(selection.model), selection.tags()
        tables = {"model_leaderboard": selection.table()}
        # The picked model was already cross-validated on evaluation's folds: no refit there
        cv_scores = selection.picked_cv_scores("roc_auc", config.evaluation.cv_folds, config.split.seed,
                                               config.evaluation.cv_max_rows)
    tuning_tags = {}
    if config.tuning.enabled:
        tuning = cached(tune_task)(train_rows, data.target, spec, preprocessor, config.model, config.tuning,
                                   config.tracking.experiment, str(fingerprint), data_key)
        config, tuning_tags, cv_scores = config.with_model(tuning.model), tuning.tags(), None
    release()  # selection's and tuning's temporaries, before the fit on every train row
    model = cached(fit_task)(train_rows, data.target, spec, preprocessor, config.model, data_key,
                             threads=config.compute.threads)
    release()  # the fit's feature matrix and conformed rows, before evaluation's own
    evaluation = cached(evaluate_task)(model, train_rows, holdout_rows, data.target, spec, config.evaluation,
                                       config.split.seed, step_key(data_key, config.model), config.compute,
                                       cv_scores)
    # The train rows are done with: let them go before registration loads MLflow and skops
    # (promotion compares on the holdout rows only).
    split, prepared, train_rows = replace(split, train=empty_like(split.train)), None, None
    release()

    version = register_task(model, evaluation, holdout_rows, spec.columns, config, fingerprint, data.report,
                            {**selection_tags, **tuning_tags, **split.params.tags(), **source.tags()}, tables)
    decision = promote_task(version, evaluation, model, split, data.target, spec, config.promotion,
                            config.evaluation.threshold)
    model_card_task(version, decision, evaluation.metrics, config, fingerprint, data.report, split.params,
                    split.time_range)
    return report_task(version, decision, evaluation.metrics, config.data.uri, fingerprint,
                       data.report.warnings)
