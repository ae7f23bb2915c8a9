"""The register stage: a fitted model and its evaluation become an MLflow run and a registered
model version, with lineage tags, unless an identical earlier run (same data, config and code)
already registered one.

Pure functions first (the lineage, and what the run logs), then `register_model`, which does
the MLflow work through the adapter, and the thin `@task` at the bottom.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pandas as pd
import yaml

from mlpipe.adapters.mlflow.models import RegisteredVersion, find_version_by_lineage, log_and_register
from mlpipe.adapters.mlflow.tracking import mark_orphaned_runs, mark_runs_of_dead_processes
from mlpipe.core.lineage import TAG_PREFIX, Lineage, code_version, redact_uri, source_hash


def model_lineage(config, fingerprint, flow_run_id: str) -> Lineage:
    """Where the model comes from: the dataset and its fingerprint, the config, this code."""
    return Lineage(
        dataset_uri=config.data.uri,
        dataset_fingerprint=str(fingerprint),
        config_hash=config.config_hash(),
        code_version=code_version(),
        source_hash=source_hash(),
        flow_run_id=flow_run_id,
    )


def _ray_tags(model) -> dict[str, str]:
    """`mlpipe.ray_job_id` of the Ray Train run that fitted the model, if one did, and the run's
    name, storage path and restarts (`mlpipe.ray_train_restarts`)."""
    job = getattr(model[-1], "ray_job_id_", "")
    run = {key: value for key, value in (getattr(model[-1], "ray_train_run_", None) or {}).items()
           if key.startswith("mlpipe.")}
    return {"mlpipe.ray_job_id": job, **run} if job else {}


def _data_params(report) -> dict[str, str]:
    """What reading the data decided on its own, as run params: the rows dropped for an
    unlabeled target and the tokens read as missing in numeric columns (column -> tokens)."""
    return {"data.unlabeled_rows_dropped": str(report.unlabeled_rows),
            "data.auto_na_values": json.dumps({c: sorted(t) for c, t in report.auto_na_values.items()})}


def run_record(model, evaluation, holdout: pd.DataFrame, columns: list[str], config, validation_report,
               extra_tags: dict[str, str] | None = None,
               tables: dict[str, list[dict]] | None = None) -> dict[str, Any]:
    """What the run logs besides the model and lineage (the keyword arguments of
    `log_and_register`): the config as params and YAML with the data URI redacted, the metrics,
    plots and validation report, the tags, and an example of the input rows."""
    safe_config = config.model_copy(update={"data": config.data.model_copy(
        update={"uri": redact_uri(config.data.uri)})})
    return dict(
        example=holdout[columns].head(5),
        params={**safe_config.flat_params(),
                **{f"evaluation.{kind}_rows_used": str(rows) for kind, rows in evaluation.sample_rows.items()},
                **_data_params(validation_report)},
        metrics=evaluation.metrics,
        plots=evaluation.plots,
        extra_json={"confusion_matrix": {"labels": [0, 1], "matrix": evaluation.confusion},
                    "permutation_importance": evaluation.importances,
                    "validation": {"rows": validation_report.rows,
                                   "coerced_columns": validation_report.coerced_columns,
                                   "id_columns": validation_report.id_columns,
                                   "missing_tokens": validation_report.missing_tokens,
                                   "auto_na_values": validation_report.auto_na_values,
                                   "unlabeled_rows_dropped": validation_report.unlabeled_rows,
                                   "warnings": validation_report.warnings}},
        config_yaml=yaml.safe_dump(safe_config.model_dump(mode="json"), sort_keys=False),
        extra_tags={"mlpipe.model_family": config.model.family,
                    **{k: redact_uri(v) if k == TAG_PREFIX + "dataset_prefix" else v
                       for k, v in (extra_tags or {}).items()},
                    **getattr(evaluation, "tags", {}), **_ray_tags(model)},
        tables={"data_profile": validation_report.profile, **(tables or {})},
        step_metrics=getattr(model[-1], "history_", None),
    )


def register_model(model, evaluation, holdout: pd.DataFrame, columns: list[str], config, fingerprint,
                   validation_report, extra_tags: dict[str, str] | None = None,
                   tables: dict[str, list[dict]] | None = None, *, flow_run_id: str = "", run_name: str = "train-local",
                   logger: logging.Logger | logging.LoggerAdapter | None = None) -> RegisteredVersion:
    """Log the run and register the model, unless an identical run already did (then its
    version comes back with `reused=True`). Runs of this lineage that a killed attempt left
    RUNNING are marked orphaned first."""
    logger = logger or logging.getLogger(__name__)
    orphaned = mark_runs_of_dead_processes()  # runs killed processes left RUNNING, in every experiment
    if orphaned:
        logger.warning("marked %d MLflow run(s) of killed processes orphaned: %s", len(orphaned), orphaned)
    lineage = model_lineage(config, fingerprint, flow_run_id)
    orphans = mark_orphaned_runs(config.tracking.experiment, lineage.key)
    if orphans:
        logger.warning("marked %d run(s) of an earlier, interrupted attempt as orphaned: %s", len(orphans), orphans)
    existing = find_version_by_lineage(config.tracking.model_name, lineage.key)
    if existing is not None:
        logger.info("identical data, config and code already registered as %s v%s: no new version",
                    existing.name, existing.version)
        return existing
    model.set_params(threshold=config.evaluation.threshold)  # its `label` uses evaluation's threshold
    version = log_and_register(
        model=model, model_name=config.tracking.model_name, experiment=config.tracking.experiment,
        run_name=run_name, lineage=lineage,
        **run_record(model, evaluation, holdout, columns, config, validation_report, extra_tags, tables))
    logger.info("registered %s v%s (run %s)", version.name, version.version, version.run_id)
    return version



# Never cached (an identical rerun is caught by the lineage check instead): a cache key would
# hash the holdout frame and the fitted model on every run.

