"""The registration stage's Prefect task: a thin wrapper over `mlpipe.stages.registration`."""

from __future__ import annotations

from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE

from mlpipe.adapters.mlflow.models import RegisteredVersion
from mlpipe.core.config import PipelineConfig
from mlpipe.core.memory import releaser
from mlpipe.core.retry_policies import TRACKING_RETRIES
from mlpipe.data.reader import DatasetFingerprint
from mlpipe.data.sources import DataSource
from mlpipe.data.splitting import Split
from mlpipe.data.validation import ValidationReport
from mlpipe.stages.evaluation import Evaluation
from mlpipe.stages.registration import register_model


# Never cached (an identical rerun is caught by the lineage check instead): a cache key would
# hash the holdout frame and the fitted model on every run.
@task(name="register", cache_policy=NO_CACHE, **TRACKING_RETRIES)
def register_task(*, model, evaluation: Evaluation, split: Split, source: DataSource, columns: list[str],
                  config: PipelineConfig, fingerprint: DatasetFingerprint, validation_report: ValidationReport,
                  tags: dict[str, str] | None = None,
                  tables: dict[str, list[dict]] | None = None) -> RegisteredVersion:
    """Log the run and register the model, unless an identical run already did. `config` is
    the run's whole config, model and data as resolved: its hash is part of the lineage.

    Registration reads only the holdout, and the fits are done: the train rows are let go
    first, before MLflow and skops load (`Split.let_go_of_train_rows`)."""
    release = releaser(split.train)
    split.let_go_of_train_rows()
    release()
    return register_model(model, evaluation, split.holdout, columns, config, fingerprint, validation_report,
                          {**(tags or {}), **split.params.tags(), **source.tags()}, tables,
                          flow_run_id=str(runtime.flow_run.id or ""),
                          run_name=f"train-{runtime.flow_run.name or 'local'}", logger=get_run_logger())
