"""The tuning stage's Prefect tasks: thin wrappers over `mlpipe.stages.tuning`."""

from __future__ import annotations

import math

import pandas as pd
from prefect import get_run_logger, task

from mlpipe.core.config import ModelConfig, TuningConfig
from mlpipe.core.memory import release_before_step
from mlpipe.model.features import FeatureSpec
from mlpipe.stages.tuning import TuningResult, run_study
from mlpipe.tasks.caching import cache_key


# Keyed on the tracking store too: the result names the study's parent run, which lives there.
@task(name="tune", cache_policy=cache_key("target", "spec", "model", "tuning", "experiment", "fingerprint",
                                          "data_key", tracking_store=True), persist_result=True,
      cache_result_in_memory=False)
def tune_task(*, train: pd.DataFrame, target: str, spec: FeatureSpec, preprocessor, model: ModelConfig,
              tuning: TuningConfig, experiment: str, fingerprint: str, data_key: str) -> TuningResult:
    """Run (or resume) the Optuna study; cached on (data, search space, trial budget)."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    release_before_step(train)
    logger = get_run_logger()
    artifact = create_progress_artifact(progress=0.0, description="tuning trials finished")
    last = {"done": -1}

    def progress(done: int, total: int, best: float | None, eta: float | None) -> None:
        if done == last["done"]:
            return
        last["done"] = done
        update_progress_artifact(artifact_id=artifact, progress=100.0 * done / total)
        logger.info("trials %d/%d  best %s  ETA %s", done, total, f"{best:.4f}" if best is not None else "-",
                    f"{eta:.0f} s" if eta is not None and math.isfinite(eta) else "-")

    result = run_study(train, target, spec, preprocessor, model, tuning, experiment, fingerprint, progress)
    logger.info("study %s: best %s %.4f (trial %d), %d complete, %d pruned, %d failed",
                result.study_name, result.metric, result.best_value, result.best_trial, result.complete,
                result.pruned, result.failed)
    return result


