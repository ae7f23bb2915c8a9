"""The `train` flow end to end: real Prefect test server, real MLflow SQLite store."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.training import train
from tasks.validation import DataValidationError

pytestmark = pytest.mark.usefixtures("prefect_server")
MODEL = "churn-classifier"
LINEAGE_TAGS = ("mlpipe.dataset_uri", "mlpipe.dataset_fingerprint", "mlpipe.config_hash",
                "mlpipe.code_version", "mlpipe.prefect_flow_run_id", "mlpipe.lineage_key")


def task_states(flow_run_id) -> dict[str, str]:
    """task name (without its run suffix) -> state name, for one flow run."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs}


def raw_rows(csv_path, n=30) -> pd.DataFrame:
    """Rows as a caller would send them: no target, with gaps and a category never seen."""
    rows = pd.read_csv(csv_path).drop(columns=["churn"]).head(n).reset_index(drop=True)
    rows["total_charges"] = rows["total_charges"].astype(object)
    rows.loc[6, "total_charges"] = " "             # numbers stored as text, with a blank, as in exports
    rows.loc[0:2, "tenure"] = np.nan               # gap in an integer column
    rows.loc[3, "contract"] = "Quarterly"          # unseen category
    rows.loc[4, "payment_method"] = None           # missing category
    rows.loc[5, "monthly_charges"] = np.nan
    return rows


def test_train_registers_champion_with_lineage_and_serves_raw_rows(workspace, fast_config, small_churn_csv):
    state = train(config=fast_config(), return_state=True)
    summary = state.result()

    assert summary.version == "1" and summary.decision.alias == "champion" and summary.decision.promoted
    assert summary.metrics["roc_auc"] > 0.8
    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == "1"
    for tag in LINEAGE_TAGS:
        assert champion.tags.get(tag), f"missing lineage tag {tag}"
    assert champion.tags["mlpipe.dataset_fingerprint"].startswith("sha256:")
    assert champion.tags["mlpipe.prefect_flow_run_id"] == str(state.state_details.flow_run_id)
    assert champion.tags["promotion.alias"] == "champion"
    assert "no champion yet" in champion.tags["promotion.reason"]

    run = client.get_run(champion.run_id)
    assert run.data.params["model.family"] == "hist_gradient_boosting"
    assert {"roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier",
            "cv_roc_auc_mean", "cv_roc_auc_std"} <= set(run.data.metrics)
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {f"plots/{p}.png" for p in ("roc_curve", "pr_curve", "calibration", "confusion_matrix",
                                       "permutation_importance")} <= plots
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    predictions = model.predict(raw_rows(small_churn_csv))
    assert list(predictions.columns) == ["probability", "label"] and len(predictions) == 30
    assert predictions["probability"].between(0, 1).all()
    assert (predictions["label"] == (predictions["probability"] >= 0.5)).all()
    as_read = pd.read_csv(small_churn_csv).drop(columns=["churn"]).head(30)  # int64 tenure, text charges
    assert as_read["tenure"].dtype == "int64"
    assert len(model.predict(as_read)) == 30
    assert set(model.metadata.get_input_schema().input_names()) == set(as_read.columns) - {"customer_id"}

    with get_client(sync_client=True) as prefect:
        artifacts = {a.key for a in prefect.read_artifacts() if a.flow_run_id == state.state_details.flow_run_id}
    assert {"promotion-decision", "holdout-metrics"} <= artifacts


def test_worse_model_becomes_challenger_and_champion_stays(workspace, fast_config):
    first = train(config=fast_config())
    worse = train(config=fast_config(
        "model.family=random_forest", "model.params.random_forest={n_estimators: 1, max_depth: 1}",
        "promotion.min_value=0.5"))

    assert worse.decision.alias == "challenger" and not worse.decision.promoted
    assert "worse than champion v1" in worse.decision.reason
    assert worse.decision.champion_score == pytest.approx(first.metrics["roc_auc"])
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == first.version
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(challenger.version) == worse.version != first.version
    assert challenger.tags["promotion.champion_version"] == first.version


def test_failing_gate_becomes_challenger_even_without_champion(workspace, fast_config):
    summary = train(config=fast_config("promotion.min_value=0.999"))
    assert summary.decision.alias == "challenger"
    assert "fails the gate" in summary.decision.reason
    client = MlflowClient()
    with pytest.raises(Exception):
        client.get_model_version_by_alias(MODEL, "champion")


def test_identical_rerun_hits_cache_and_adds_no_version(workspace, fast_config):
    first = train(config=fast_config(), return_state=True)
    second = train(config=fast_config(), return_state=True)

    states = task_states(second.state_details.flow_run_id)
    for name in ("load", "validate", "features", "fit", "evaluate"):
        assert states[name] == "Cached", states
    summary = second.result()
    assert summary.reused_version and summary.version == first.result().version
    assert len(MlflowClient().search_model_versions(f"name = '{MODEL}'")) == 1

    refreshed = train(config=fast_config(), refresh=True, return_state=True)
    states = task_states(refreshed.state_details.flow_run_id)
    assert states["fit"] == "Completed" and states["load"] == "Completed", states
    assert refreshed.result().reused_version  # same data, config and code: still no new version


def test_changed_data_misses_the_cache(workspace, fast_config, generate_churn, tmp_path):
    first = train(config=fast_config())
    path = tmp_path / "changed.csv"
    generate_churn(rows=1500, seed=12).to_csv(path, index=False)
    state = train(config=fast_config(data=path), return_state=True)
    assert task_states(state.state_details.flow_run_id)["fit"] == "Completed"
    assert state.result().version != first.version


def test_bad_dataset_fails_at_validate_with_nothing_registered(workspace, fast_config, small_churn_csv, tmp_path):
    frame = pd.read_csv(small_churn_csv)
    frame["churn"] = "No"
    bad = tmp_path / "single_class.csv"
    frame.to_csv(bad, index=False)

    state = train(config=fast_config(data=bad), return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, DataValidationError) and "single class" in str(error) and "churn" in str(error)
    states = task_states(state.state_details.flow_run_id)
    assert states["validate"] == "Failed" and "fit" not in states and "register" not in states
    client = MlflowClient()
    assert client.search_registered_models() == []
    assert client.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()]) == []


def test_flow_parameters_are_the_typed_config_form():
    """The Prefect UI renders `train`'s parameters from this schema: typed, with defaults."""
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(train).model_dump()
    assert set(schema["properties"]) == {"config", "refresh"}
    definitions = schema["definitions"]
    pipeline = definitions["PipelineConfig"]
    assert pipeline["additionalProperties"] is False
    assert {"data", "split", "features", "model", "evaluation", "promotion", "tracking", "cache", "compute"} <= set(
        pipeline["properties"])
    model = definitions["ModelConfig"]["properties"]
    assert model["family"]["enum"] == ["logistic_regression", "random_forest", "hist_gradient_boosting", "mlp"]
    assert model["family"]["default"] == "hist_gradient_boosting"
    assert definitions["PromotionConfig"]["properties"]["min_value"]["default"] == 0.75
    assert definitions["DataConfig"]["properties"]["uri"]["default"] == "data/churn.csv"
