"""The training stage's Prefect tasks: thin wrappers over `mlpipe.stages.training`."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sklearn.pipeline import Pipeline

from mlpipe.adapters.ray_cluster import is_ray_system_failure
from mlpipe.compute.evaluation_units import estimator_threads
from mlpipe.core.config import ModelConfig
from mlpipe.core.memory import release_before_step
from mlpipe.model.features import FeatureSpec
from mlpipe.stages.training import ModelSelection, fit_model, select_model
from mlpipe.tasks.caching import cache_key


@task(name="select-model", cache_policy=cache_key("target", "spec", "model", "metric", "folds", "candidates",
                                                  "allow_blend", "data_key", "max_rows"),
      persist_result=True, cache_result_in_memory=False)
def select_model_task(*, train: pd.DataFrame, target: str, spec: FeatureSpec, preprocessor, model: ModelConfig,
                      metric: str, folds: int, candidates: list[str], allow_blend: bool,
                      data_key: str, max_rows: int | None = None, threads: int | None = None) -> ModelSelection:
    """Resolve `model.family: auto` by cross-validation on the train split; cached on (data,
    model config, metric, folds, the candidate list as resolved: a newly registered family
    misses the cache). `allow_blend` is off when tuning follows: a study tunes one family. The
    leaderboard artifact is `publish_leaderboard_task`'s, which a run from the cache runs too."""
    release_before_step(train)
    with estimator_threads(threads):
        selection = select_model(train, target, spec, preprocessor, model.model_copy(update={"candidates": candidates}),
                                 metric, folds, allow_blend, max_rows=max_rows)
    selection.model = selection.model.model_copy(update={"candidates": model.candidates})
    logger = get_run_logger()
    for row in selection.table():
        logger.info("candidate %s", row)
    if selection.not_tried:
        logger.warning("model selection budget spent: %s not tried", ", ".join(selection.not_tried))
    logger.info("model family: %s (%s; candidates compared on %d of %d train rows)", selection.model.family,
                selection.reason, selection.rows, len(train))
    return selection


def leaderboard_inputs(selection: ModelSelection) -> dict:
    """What `publish_leaderboard_task` takes: the table and its description, not the selection
    itself (Prefect walks a task's inputs for futures: the selection's objects cost 1.7 s of it)."""
    return {"table": selection.table(),
            "description": f"model.family auto: {selection.model.family} ({selection.reason}); "
                           f"candidates compared on {selection.rows} train rows"}


@task(name="leaderboard", cache_policy=NO_CACHE)
def publish_leaderboard_task(*, table: list[dict], description: str) -> None:
    """The candidates' cross-validation scores as the run's `model-leaderboard` table artifact,
    whether selection ran in this run or came from the cache."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact(key="model-leaderboard", table=table, description=description)


@task(name="fit", cache_policy=cache_key("target", "spec", "model", "data_key"), persist_result=True,
      cache_result_in_memory=False, retries=1, retry_condition_fn=is_ray_system_failure)
def fit_task(*, train: pd.DataFrame, target: str, spec: FeatureSpec, preprocessor, model: ModelConfig,
             data_key: str, threads: int | None = None) -> Pipeline:
    """Fit the model; cached on (dataset fingerprint + split + features config, model config).
    A Ray Train run that Ray gave up on (workers lost beyond `max_failures`) is retried once."""
    release_before_step(train)  # selection's and tuning's temporaries, before the fit on every train row
    with estimator_threads(threads):
        pipeline = fit_model(train, target, spec, preprocessor, model)
    job = getattr(pipeline[-1], "ray_job_id_", "")
    if job:
        run = getattr(pipeline[-1], "ray_train_run_", None) or {}
        get_run_logger().info("trained on Ray Train, Ray job %s, run %s (storage %s)", job,
                              run.get("mlpipe.ray_train_run"), run.get("mlpipe.ray_train_storage_path"))
        for number, cause in enumerate(run.get("restart_causes", []), start=1):
            get_run_logger().warning("Ray Train run %s restarted (%d) from its latest checkpoint under %s: %s",
                                     run.get("mlpipe.ray_train_run"), number,
                                     run.get("mlpipe.ray_train_storage_path"), cause)
    return pipeline
