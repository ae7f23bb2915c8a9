"""The streamed path's Prefect tasks (`compute.stream`): a thin wrapper over
`mlpipe.stages.streamed` (read, validate, split, fit and score in blocks on Ray) and the
evaluation of its holdout scores. Not cached: a cache key would need the whole table's rows."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mlpipe.adapters.ray_cluster import is_ray_system_failure
from mlpipe.compute.evaluation_units import estimator_threads
from mlpipe.core.config import PipelineConfig
from mlpipe.stages.evaluation import Evaluation, evaluate_scores
from mlpipe.stages.streamed import StreamedFit, fit_streamed, local_cv_model


@task(name="fit-streamed", cache_policy=NO_CACHE, retries=1, retry_condition_fn=is_ray_system_failure)
def fit_streamed_task(*, config: PipelineConfig) -> StreamedFit:
    """Validate, split and fit over the table in blocks on Ray; score its holdout block by block."""
    with estimator_threads(config.compute.threads):
        fitted = fit_streamed(config)
    logger, report = get_run_logger(), fitted.validated.report
    for message in report.warnings:
        logger.warning(message)
    run = getattr(fitted.model[-1], "ray_train_run_", None) or {}
    logger.info("streamed %d rows in blocks (%d unlabeled dropped): features fitted on a sample of %d train rows, "
                "%d holdout rows scored on Ray; Ray Train run %s (storage %s)", report.rows, report.unlabeled_rows,
                len(fitted.train_sample), len(fitted.labels), run.get("mlpipe.ray_train_run"),
                run.get("mlpipe.ray_train_storage_path"))
    return fitted


@task(name="evaluate-streamed", cache_policy=NO_CACHE, retries=1, retry_condition_fn=is_ray_system_failure)
def evaluate_streamed_task(*, fitted: StreamedFit, config: PipelineConfig) -> Evaluation:
    """Holdout metrics from every holdout row's score; CV (fitted in-process) and permutation
    importance on the bounded samples."""
    with estimator_threads(config.compute.threads):
        return evaluate_scores(fitted.model, fitted.labels, fitted.scores, fitted.train_sample, fitted.split.holdout,
                               config.data.target, fitted.spec, config.evaluation, config.split.seed, config.compute,
                               cv_model=local_cv_model(fitted.model))
