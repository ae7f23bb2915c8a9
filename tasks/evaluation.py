"""The evaluation stage's Prefect tasks: thin wrappers over `mlpipe.stages.evaluation`."""

from __future__ import annotations

import pandas as pd
from prefect import get_run_logger, task

from mlpipe.adapters.ray_cluster import is_ray_system_failure
from mlpipe.compute.evaluation_units import estimator_threads
from mlpipe.core.config import ComputeConfig, EvaluationConfig
from mlpipe.core.memory import release_before_step
from mlpipe.model.features import FeatureSpec
from mlpipe.stages.evaluation import Evaluation, evaluate_model
from mlpipe.tasks.caching import cache_key


@task(name="evaluate", cache_policy=cache_key("target", "spec", "evaluation", "seed", "model_key"),
      persist_result=True, cache_result_in_memory=False, retries=1, retry_condition_fn=is_ray_system_failure)
def evaluate_task(*, model, train: pd.DataFrame, holdout: pd.DataFrame, target: str, spec: FeatureSpec,
                  evaluation: EvaluationConfig, seed: int, model_key: str,
                  compute: ComputeConfig | None = None, cv_scores: tuple[float, ...] | None = None) -> Evaluation:
    """Evaluate on the holdout; cached on the fitted model's key and the evaluation config
    (not on the compute backend nor on `cv_scores`: they give the same numbers)."""
    release_before_step(train)  # the fit's feature matrix and conformed rows, before evaluation's own
    with estimator_threads(compute.threads if compute else None):
        result = evaluate_model(model, train, holdout, target, spec, evaluation, seed, compute, cv_scores)
    logger = get_run_logger()
    if cv_scores is not None:
        logger.info("cross-validation: model selection's fold scores of this model, not refitted")
    logger.info("cross-validated on %d of %d train rows; permutation importance on %d of %d holdout rows",
                result.sample_rows["cv"], len(train), result.sample_rows["importance"], len(holdout))
    if compute is not None and compute.backend == "ray":
        logger.info("evaluation ran on Ray: %s", result.tags)
    return result
