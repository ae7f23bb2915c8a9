"""The `score` flow: a registered model over a dataset, predictions out as Parquet."""

from __future__ import annotations

from typing import Annotated

from mlpipe.tasks.ownership import claim_flow_run
from mlpipe.tasks.scoring import load_model_task, resolve_model_task, score_report_task, score_task
from prefect import flow
from pydantic import Field

from mlpipe.stages.scoring import ScoringSummary


@flow(name="score", log_prints=True, validate_parameters=True)
def score(
    data_uri: str,
    output_uri: str,
    model_name: str = "churn-classifier",
    model_ref: str = "champion",
    id_column: str = "customer_id",
    chunk_rows: Annotated[int, Field(gt=0)] = 50_000,
    threshold: Annotated[float | None, Field(ge=0.0, le=1.0)] = None,
) -> ScoringSummary:
    """Score a dataset (CSV or Parquet, local or s3://) with a registered model; write Parquet.

    resolve `model_ref` (an alias such as champion, or a version number) -> load the model ->
    read `chunk_rows` rows at a time through the model's own conform step, score -> write
    `output_uri` atomically -> summary artifact. Output columns: the id column (`row_number`
    when the input has none), probability, label (probability >= `threshold`; empty: the
    model's own, evaluation's threshold), model_name, model_version, scored_at. Rows whose
    numeric values cannot be parsed are rejected and listed by row number; a column the model
    reads that is missing fails the run.

    Args:
        data_uri: The dataset to score: a CSV or Parquet file, local or s3://.
        output_uri: Where the Parquet predictions are written (local or s3://), atomically.
        model_name: The registered model in MLflow.
        model_ref: An alias (champion, challenger) or a version number.
        id_column: The column that identifies a row in the output (row_number when missing).
        chunk_rows: Rows read and scored at a time.
        threshold: The label's probability threshold; empty: the model's own (evaluation's).
    """
    claim_flow_run(sweep_tracking=False)  # label this run with its process; crash what killed processes left
    model = resolve_model_task(model_name=model_name, model_ref=model_ref)
    pipeline = load_model_task(model=model)
    summary = score_task(pipeline=pipeline, model=model, data_uri=data_uri, output_uri=output_uri, id_column=id_column,
                         chunk_rows=chunk_rows, threshold=threshold)
    return score_report_task(summary=summary)
