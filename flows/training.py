"""The `train` flow: raw data in, a registered and (maybe) promoted model out."""

from __future__ import annotations

from mlpipe.flows.preparation import choose_model, prepare_data
from mlpipe.tasks.caching import cached_steps, step_key
from mlpipe.tasks.data import fingerprint_task, resolve_data_task
from mlpipe.tasks.evaluation import evaluate_task
from mlpipe.tasks.ownership import claim_flow_run
from mlpipe.tasks.promotion import promote_task
from mlpipe.tasks.registration import register_task
from mlpipe.tasks.reports import model_card_task, report_task
from mlpipe.tasks.streamed import evaluate_streamed_task, fit_streamed_task
from mlpipe.tasks.training import fit_task
from prefect import flow

from mlpipe.core.config import PipelineConfig
from mlpipe.data.reader import DatasetFingerprint
from mlpipe.data.sources import DataSource
from mlpipe.data.splitting import Split
from mlpipe.data.validation import ValidationReport
from mlpipe.model.features import FeatureSpec
from mlpipe.stages.evaluation import Evaluation
from mlpipe.stages.promotion import HoldoutBlocks
from mlpipe.stages.reports import TrainingSummary


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

    Args:
        config: The pipeline's whole configuration, as in conf/churn.yaml: the data, split,
            features, model, tuning, evaluation, promotion, tracking, cache and compute sections.
        refresh: Recompute every cached step (load, validate, features, select model, tune, fit,
            evaluate) and overwrite its stored result, instead of reusing results keyed on the same
            data, config and code. Off: a rerun on the same data reuses them.
    """
    # label this run with its process; crash the flow runs of killed processes (their MLflow runs:
    # at register, where MLflow is first needed: importing it here would hold ~90 MB through the fit)
    claim_flow_run(sweep_tracking=False)
    cached = cached_steps(config.cache, refresh)  # cached(task): results persisted, keyed per task

    source = resolve_data_task(data=config.data)  # a prefix (`.../`): its newest object
    if config.compute.stream:  # the table in blocks on Ray, never in this process
        return train_streamed(config, source)
    prepared = prepare_data(data=source.data, split=config.split, features=config.features,
                            min_class_rows=config.min_class_rows(), cached=cached)
    split, spec = prepared.split, prepared.spec
    choice = choose_model(prepared=prepared, config=config, tune=config.tuning.enabled, cached=cached)
    run_config = config.with_data(source.data).with_model(choice.model)  # as resolved: the lineage hashes it

    model = cached(fit_task)(train=split.train, target=prepared.target, spec=spec, preprocessor=prepared.preprocessor,
                             model=choice.model, data_key=prepared.data_key, threads=config.compute.threads)
    evaluation = cached(evaluate_task)(model=model, train=split.train, holdout=split.holdout, target=prepared.target,
                                       spec=spec, evaluation=config.evaluation, seed=config.split.seed,
                                       model_key=step_key(prepared.data_key, choice.model), compute=config.compute,
                                       cv_scores=choice.cv_scores)
    return publish(model=model, evaluation=evaluation, split=split, spec=spec, source=source, config=run_config,
                   fingerprint=prepared.fingerprint, report=prepared.data.report, tags=choice.tags,
                   tables=choice.tables)


def train_streamed(config: PipelineConfig, source: DataSource) -> TrainingSummary:
    """`compute.stream`: the table is read, validated, split, transformed and scored in blocks by
    Ray Data and trained on by Ray Train; this process holds bounded samples and the holdout's
    (label, score) pairs, never the table. Register, promote and the model card as above."""
    run_config = config.with_data(source.data)
    fingerprint = fingerprint_task(data=source.data)
    fitted = fit_streamed_task(config=run_config)
    evaluation = evaluate_streamed_task(fitted=fitted, config=run_config)
    return publish(model=fitted.model, evaluation=evaluation, split=fitted.split, spec=fitted.spec, source=source,
                   config=run_config, fingerprint=fingerprint, report=fitted.validated.report,
                   tags={"mlpipe.streamed": "true"}, tables={}, blocks=fitted.holdout)


def publish(*, model, evaluation: Evaluation, split: Split, spec: FeatureSpec, source: DataSource,
            config: PipelineConfig, fingerprint: DatasetFingerprint, report: ValidationReport, tags: dict[str, str],
            tables: dict[str, list[dict]], blocks: HoldoutBlocks | None = None) -> TrainingSummary:
    """register -> promote -> model card -> the run's report (`config`: the run's, as resolved;
    `blocks`: a streamed table's holdout, which the champion comparison scores block by block)."""
    version = register_task(model=model, evaluation=evaluation, split=split, source=source, columns=spec.columns,
                            config=config, fingerprint=fingerprint, validation_report=report, tags=tags, tables=tables)
    decision = promote_task(version=version, evaluation=evaluation, model=model, split=split,
                            target=config.data.target, spec=spec, promotion=config.promotion,
                            threshold=config.evaluation.threshold, blocks=blocks)
    model_card_task(version=version, decision=decision, metrics=evaluation.metrics, config=config,
                    fingerprint=fingerprint, validation_report=report, split=split)
    return report_task(version=version, decision=decision, metrics=evaluation.metrics, dataset_uri=source.data.uri,
                       fingerprint=fingerprint, warnings=report.warnings)
