"""The scoring stage's Prefect tasks: thin wrappers over `mlpipe.stages.scoring`."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mlpipe.adapters.mlflow.models import load_version, model_input_schema
from mlpipe.adapters.mlflow.versions import resolve_model_version
from mlpipe.core.retry_policies import IO_RETRIES, TRACKING_RETRIES
from mlpipe.stages.scoring import InputColumn, ScoringModel, ScoringSummary, score_dataset, summary_markdown


@task(name="resolve-model", **TRACKING_RETRIES)
def resolve_model_task(*, model_name: str, model_ref: str) -> ScoringModel:
    """Which version `model_ref` (an alias or a version number) names, and its input signature."""
    version = resolve_model_version(model_name, model_ref)
    inputs = tuple(InputColumn(name, kind) for name, kind in model_input_schema(model_name, version))
    get_run_logger().info("%s@%s is v%s; it reads %d columns", model_name, model_ref, version, len(inputs))
    return ScoringModel(model_name, version, model_ref, inputs)


@task(name="load-model", **TRACKING_RETRIES)
def load_model_task(*, model: ScoringModel):
    """Load the registered sklearn Pipeline (skops, trusted types only)."""
    return load_version(model.name, model.version)


# Never cached: each run must write its output, and the key would hash the whole model.
@task(name="score", cache_policy=NO_CACHE, **IO_RETRIES)
def score_task(*, pipeline, model: ScoringModel, data_uri: str, output_uri: str, id_column: str,
               chunk_rows: int, threshold: float | None) -> ScoringSummary:
    """Score the dataset chunk by chunk and write the predictions atomically. A retry (only on
    transient I/O faults) rewrites the whole output, so it is never a mix of two attempts."""
    logger = get_run_logger()

    def progress(rows_in: int, rows_rejected: int) -> None:
        logger.info("read %d rows, %d rejected so far", rows_in, rows_rejected)

    summary = score_dataset(pipeline, model, data_uri, output_uri, id_column=id_column, chunk_rows=chunk_rows,
                            threshold=threshold, progress=progress)
    for message in summary.warnings:
        logger.warning(message)
    for problem in summary.rejected[:5]:
        logger.warning("%s rejected: %s %r is %s", problem.location, problem.column, problem.value, problem.problem)
    logger.info("scored %d of %d rows with %s v%s -> %s", summary.rows_scored, summary.rows_in,
                summary.model_name, summary.model_version, summary.output_uri)
    return summary


@task(name="score-report")
def score_report_task(*, summary: ScoringSummary) -> ScoringSummary:
    """Publish the run summary (markdown) and, when rows were rejected, their row numbers (table)."""
    create_markdown_artifact(key="batch-score-summary", markdown=summary_markdown(summary),
                             description=f"{summary.model_name} v{summary.model_version}: "
                                         f"{summary.rows_scored} scored, {summary.rows_rejected} rejected")
    if summary.rows_rejected:
        create_table_artifact(key="batch-score-rejected",
                              table=[{"where": r.location, "row": r.row, "column": r.column, "value": r.value,
                                      "problem": r.problem} for r in summary.rejected],
                              description=f"{summary.rows_rejected} rejected rows (first {len(summary.rejected)} "
                                          "problems; where = file line of a CSV input (the header is line 1), "
                                          "else row index; row = 0-based data row)")
    return summary
