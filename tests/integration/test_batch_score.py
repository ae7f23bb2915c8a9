"""The `score` flow end to end: a model trained by `train`, real Prefect test server, real MLflow
SQLite store, local files and moto's S3 server."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client

from mlpipe.adapters.mlflow.versions import ModelLookupError
from mlpipe.data.validation import DataValidationError
from mlpipe.flows.batch_inference import score
from mlpipe.flows.training import train

pytestmark = pytest.mark.usefixtures("prefect_server")
MODEL = "churn-classifier"
# (row, column, bad value): rows the flow must reject, by their 0-based data row in the file
BAD_VALUES = [(3, "monthly_charges", "abc"), (1200, "tenure", "twelve")]
# Scoring is under test, not training: the cheapest model that passes the promotion gate.
QUICK = ("model.family=logistic_regression", "evaluation.cv_folds=2", "evaluation.permutation_repeats=1")


def bad_input(small_churn_csv) -> pd.DataFrame:
    """The sample as a caller would send it (no target), with values a model cannot read and
    values it can: an unseen category, a blank number, a missing category."""
    frame = pd.read_csv(small_churn_csv, dtype=str, keep_default_na=False).drop(columns=["churn"])
    for row, column, value in BAD_VALUES:
        frame.loc[row, column] = value
    frame.loc[10, "contract"] = "Quarterly"
    frame.loc[11, "total_charges"] = " "
    frame.loc[12, "payment_method"] = ""
    return frame


def artifacts_of(flow_run_id) -> dict:
    with get_client(sync_client=True) as client:
        return {a.key: a for a in client.read_artifacts() if a.flow_run_id == flow_run_id}


def champion_version() -> str:
    return str(MlflowClient().get_model_version_by_alias(MODEL, "champion").version)


def test_scores_csv_with_champion_and_reports_rejected_rows(workspace, fast_config, small_churn_csv, tmp_path):
    train(config=fast_config(*QUICK))
    data = tmp_path / "to_score.csv"
    frame = bad_input(small_churn_csv)
    frame.to_csv(data, index=False)
    output = tmp_path / "scored" / "predictions.parquet"

    state = score(data_uri=str(data), output_uri=str(output), chunk_rows=400, return_state=True)
    summary = state.result()

    assert (summary.rows_in, summary.rows_rejected) == (len(frame), len(BAD_VALUES))
    assert [(r.row, r.column, r.value, r.problem) for r in summary.rejected] == [
        (row, column, value, "not a number") for row, column, value in BAD_VALUES]
    lines = data.read_text().splitlines()  # the places a person opens: file lines, the header is line 1
    assert [r.location for r in summary.rejected] == [f"line {row + 2}" for row, _, _ in BAD_VALUES]
    assert all(value in lines[row + 1] for row, _, value in BAD_VALUES)
    written = pd.read_parquet(output)
    assert len(written) == summary.rows_scored == len(frame) - len(BAD_VALUES)
    assert set(written["model_version"]) == {champion_version()} == {summary.model_version}
    assert set(written["model_name"]) == {MODEL} and written["scored_at"].nunique() == 1
    rejected_ids = {frame.loc[row, "customer_id"] for row, _, _ in BAD_VALUES}
    assert set(written["customer_id"]) == set(frame["customer_id"]) - rejected_ids  # unseen/blank rows scored
    assert written["probability"].between(0, 1).all()
    assert (written["label"] == (written["probability"] >= 0.5).astype(int)).all()
    assert [p.name for p in output.parent.iterdir()] == ["predictions.parquet"]  # no temp file left

    artifacts = artifacts_of(state.state_details.flow_run_id)
    assert "rows rejected | 2" in artifacts["batch-score-summary"].data
    table = artifacts["batch-score-rejected"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert [r["row"] for r in rows] == [row for row, _, _ in BAD_VALUES]
    assert [r["where"] for r in rows] == [f"line {row + 2}" for row, _, _ in BAD_VALUES]


@pytest.mark.slow  # over 10 s
def test_scores_a_given_version_and_fails_cleanly_on_bad_refs_and_columns(workspace, fast_config, small_churn_csv,
                                                                           tmp_path):
    train(config=fast_config(*QUICK))
    challenger = train(config=fast_config(
        *QUICK, "model.family=random_forest", "model.params.random_forest={n_estimators: 1, max_depth: 1}",
        "promotion.min_value=0.5"))
    assert challenger.decision.alias == "challenger" and challenger.version != champion_version()
    folder = tmp_path / "batch"  # tmp_path is also the workspace, with MLflow's files
    folder.mkdir()
    data = folder / "to_score.csv"
    bad_input(small_churn_csv).to_csv(data, index=False)
    output = folder / "predictions.parquet"

    by_number = score(data_uri=str(data), output_uri=str(output), model_ref=challenger.version)
    assert set(pd.read_parquet(output)["model_version"]) == {challenger.version} == {by_number.model_version}
    by_alias = score(data_uri=str(data), output_uri=str(output), model_ref="challenger")
    assert by_alias.model_version == challenger.version
    before = output.read_bytes()

    missing = score(data_uri=str(data), output_uri=str(output), model_ref="99", return_state=True)
    assert missing.is_failed()
    error = missing.result(raise_on_failure=False)
    assert isinstance(error, ModelLookupError) and "no version 99" in str(error)

    no_contract = folder / "no_contract.csv"
    bad_input(small_churn_csv).drop(columns=["contract", "tenure"]).to_csv(no_contract, index=False)
    failed = score(data_uri=str(no_contract), output_uri=str(output), return_state=True)
    assert failed.is_failed()
    error = failed.result(raise_on_failure=False)
    assert isinstance(error, DataValidationError) and "tenure" in str(error) and "contract" in str(error)
    assert output.read_bytes() == before  # the previous predictions are untouched
    assert sorted(p.name for p in folder.iterdir()) == ["no_contract.csv", "predictions.parquet", "to_score.csv"]


# -- S3: moto's server (fixtures s3_endpoint / s3_env in tests/conftest.py) ----------------------

def test_scores_parquet_from_s3_to_s3(workspace, fast_config, small_churn_csv, s3_env, tmp_path):
    train(config=fast_config(*QUICK))
    local = tmp_path / "to_score.parquet"
    bad_input(small_churn_csv).to_parquet(local, index=False)
    s3_env.upload_file(str(local), "bucket", "incoming/to_score.parquet")
    s3_env.put_object(Bucket="bucket", Key="scored/predictions.parquet", Body=b"previous run")

    summary = score(data_uri="s3://bucket/incoming/to_score.parquet",
                    output_uri="s3://bucket/scored/predictions.parquet", chunk_rows=500)

    assert summary.rows_rejected == len(BAD_VALUES) and [r.row for r in summary.rejected] == [3, 1200]
    keys = [o["Key"] for o in s3_env.list_objects_v2(Bucket="bucket", Prefix="scored/")["Contents"]]
    assert keys == ["scored/predictions.parquet"]  # replaced, and no temporary object left
    fetched = tmp_path / "fetched.parquet"
    s3_env.download_file("bucket", "scored/predictions.parquet", str(fetched))
    written = pd.read_parquet(fetched)
    assert len(written) == summary.rows_in - summary.rows_rejected == 1500 - len(BAD_VALUES)
    assert set(written["model_version"]) == {champion_version()}


def test_flow_parameters_form():
    """The Prefect UI renders `score`'s parameters from this schema: typed, bounded, with defaults."""
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(score).model_dump()
    properties = schema["properties"]
    assert schema["required"] == ["data_uri", "output_uri"]
    assert properties["model_ref"]["default"] == "champion" and properties["chunk_rows"]["default"] == 50_000
    assert properties["chunk_rows"]["exclusiveMinimum"] == 0
    bounded, empty = properties["threshold"]["anyOf"]  # empty: the model's own threshold
    assert (bounded["minimum"], bounded["maximum"], empty["type"]) == (0.0, 1.0, "null")
