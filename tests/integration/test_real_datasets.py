"""Real public tables (bundled in installed packages, see benchmarks/datasets.py) through the
default pipeline: the config names only the target and its positive label; everything else is
inferred or default (`model.family: auto`). The new version then scores 50 raw rows, as pandas
reads them from the file and with numbers sent as text with blanks, through MLflow's pyfunc
and through the `score` flow, which must agree."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client

from benchmarks.datasets import LOADERS, load
from mlpipe.core.config import build_config
from mlpipe.flows.batch_inference import score
from mlpipe.flows.training import train

pytestmark = pytest.mark.usefixtures("prefect_server")
MODEL = "churn-classifier"  # the default tracking.model_name
# Holdout roc_auc the default reaches with the small models below, with some room: a floor
# that catches a pipeline that learns nothing (benchmarks/quality.py measures the real thing).
FLOORS = {"breast_cancer": 0.97, "titanic": 0.80, "credit": 0.78, "telco_churn": 0.80, "affairs": 0.68,
          "breast_cancer_uci": 0.97}
# Not part of the data section: smaller models and cheaper evaluation keep the file fast.
SMALL = {"model": {"params": {"hist_gradient_boosting": {"max_iter": 40},
                              "random_forest": {"n_estimators": 40}}},
         "evaluation": {"cv_folds": 2, "permutation_repeats": 1}}


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread():
    """HistGradientBoosting's OpenMP threads spin against the other processes of a busy shared
    machine (CV fits 20x slower here); these small tables need no second thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real")
    return {name: load(name, folder) for name in LOADERS}


def raw_rows(dataset, n: int = 50) -> pd.DataFrame:
    """Rows as a client sends them: read by pandas from the file (int64, str, NaN), target
    dropped, and the first numeric column with gaps as text, as in a spreadsheet export: numbers
    as strings, a blank and an empty string."""
    rows = pd.read_csv(dataset.path).drop(columns=[dataset.target]).sample(n, random_state=3).reset_index(drop=True)
    numeric = [c for c in rows.columns if pd.api.types.is_float_dtype(rows[c])]
    if numeric:
        column = numeric[0]
        text = rows[column].astype(object).map(lambda v: "" if pd.isna(v) else repr(float(v)))
        text[0], text[1] = " ", ""
        rows[column] = text
    return rows


@pytest.mark.parametrize("name", list(LOADERS))
def test_default_pipeline_trains_and_serves_raw_rows(name, tables, workspace, tmp_path):
    dataset = tables[name]
    config = build_config({"data": {"uri": str(dataset.path), "target": dataset.target,
                                    "positive_label": dataset.positive_label}, **SMALL})
    assert config.model.family == "auto" and config.data.id_columns == [] and config.features.ratios == []

    state = train(config=config, return_state=True)
    summary = state.result()
    assert summary.metrics["roc_auc"] > FLOORS[name]
    # the default gate (roc_auc >= 0.75) decides; affairs, the hardest table, stays challenger
    alias = "champion" if summary.metrics["roc_auc"] >= config.promotion.min_value else "challenger"
    assert summary.decision.alias == alias

    client = MlflowClient()
    version = client.get_model_version_by_alias(MODEL, alias)
    run = client.get_run(version.run_id)
    family = version.tags["mlpipe.model_family"]
    assert family in {"logistic_regression", "hist_gradient_boosting", "random_forest", "soft_voting"}
    assert run.data.params["model.family"] == family  # the resolved config is what was logged
    board = client.load_table(run.info.experiment_id, "model_leaderboard.json", run_ids=[run.info.run_id])
    assert len(board) == 4 and board["picked"].sum() == 1  # three families and the blend of the top two
    assert board.loc[board["picked"], "family"].iloc[0].startswith(family)
    with get_client(sync_client=True) as prefect:
        artifacts = {a.key for a in prefect.read_artifacts() if a.flow_run_id == state.state_details.flow_run_id}
    assert "model-leaderboard" in artifacts

    rows = raw_rows(dataset)
    predicted = mlflow.pyfunc.load_model(f"models:/{MODEL}@{alias}").predict(rows)
    assert list(predicted.columns) == ["probability", "label"] and len(predicted) == 50
    assert predicted["probability"].between(0, 1).all() and predicted["probability"].nunique() > 1
    assert (predicted["label"] == (predicted["probability"] >= 0.5).astype(int)).all()

    data, output = tmp_path / "rows.csv", tmp_path / "scores.parquet"
    rows.to_csv(data, index=False)
    scored = score(data_uri=str(data), output_uri=str(output), model_ref=alias, id_column="none")
    assert (scored.rows_scored, scored.rows_rejected) == (50, 0)
    written = pd.read_parquet(output).sort_values("row_number")
    np.testing.assert_allclose(written["probability"].to_numpy(), predicted["probability"].to_numpy(), atol=1e-9)
    assert written["label"].tolist() == predicted["label"].tolist()
