"""The `drift-monitor` flow end to end: a trained champion, a real Prefect test server (events,
artifacts) and a real MLflow SQLite store."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from mlpipe.data.drift import DriftThresholds
from mlpipe.flows.monitoring import drift_monitor
from mlpipe.flows.training import train
from mlpipe.stages.monitoring import DRIFT_EVENT, drift_table

pytestmark = pytest.mark.usefixtures("prefect_server")
CHEAP = ("evaluation.cv_folds=2", "evaluation.permutation_repeats=1")  # the champion's scores don't matter here


def drift_events(data_uri: str) -> list:
    with get_client(sync_client=True) as client:
        # a fresh filter each time: its `until` defaults to the moment it is built
        page = client.read_events(EventFilter(event=EventNameFilter(name=[DRIFT_EVENT]),
                                              resource=EventResourceFilter(id=[data_uri])), limit=10)
    return page.events


def wait_for_drift_event(data_uri: str, timeout: float = 20.0) -> list:
    """Events are sent in the background: poll until one arrived (or time out)."""
    deadline = time.monotonic() + timeout
    while not (events := drift_events(data_uri)) and time.monotonic() < deadline:
        time.sleep(0.25)
    return events


def artifacts_of(flow_run_id) -> dict:
    with get_client(sync_client=True) as client:
        return {a.key: a for a in client.read_artifacts() if a.flow_run_id == flow_run_id}


def drifted_copy(frame, seed: int = 0):
    """Shifted numbers, a contract mix pushed to month-to-month, a payment method never seen in
    training, and no target column (new data has no labels yet)."""
    rng = np.random.default_rng(seed)
    frame = frame.drop(columns=["churn"])
    frame["tenure"] = frame["tenure"] // 2
    frame["monthly_charges"] = frame["monthly_charges"] + 40
    frame.loc[rng.random(len(frame)) < 0.7, "contract"] = "Month-to-month"
    frame.loc[rng.random(len(frame)) < 0.2, "payment_method"] = "Crypto wallet"
    return frame


def test_drift_monitor_emits_only_for_drifted_data(workspace, fast_config, small_churn_csv, generate_churn):
    champion = train(config=fast_config(*CHEAP))
    same = workspace / "incoming" / "same.csv"
    shifted = workspace / "incoming" / "shifted.csv"
    same.parent.mkdir()
    generate_churn(rows=1500, seed=21).to_csv(same, index=False)
    drifted_copy(generate_churn(rows=1500, seed=22)).to_csv(shifted, index=False)

    stable_state = drift_monitor(data_uri=str(same), return_state=True)
    stable = stable_state.result()
    assert not stable.drifted and stable.reasons == ()
    assert stable.model_version == champion.version and stable.reference_uri == str(small_churn_csv)
    assert stable.prediction_psi < 0.1 and max(f.psi for f in stable.features) < 0.1
    assert {f.feature for f in stable.features} >= {"tenure", "monthly_charges", "contract", "payment_method"}
    assert "customer_id" not in {f.feature for f in stable.features}  # an ID column is not a feature

    drifted_state = drift_monitor(data_uri=str(shifted), return_state=True)
    report = drifted_state.result()
    assert report.drifted
    drifted = {f.feature: f for f in report.drifted_features}
    assert {"tenure", "monthly_charges", "contract", "payment_method"} <= set(drifted), drift_table(report)
    assert drifted["payment_method"].unseen_share > 0.1
    assert report.prediction_psi > 0.2 and report.mean_prediction_current > report.mean_prediction_reference

    events = wait_for_drift_event(str(shifted))
    assert len(events) == 1
    event = events[0]
    assert event.event == "mlpipe.drift.detected"
    assert event.resource.id == str(shifted)  # the retrain trigger passes this on as data_uri
    assert event.resource["mlpipe.prefix"] == str(shifted.parent) + "/"
    payload = event.payload
    assert payload["drifted"] is True and payload["model_name"] == "churn-classifier"
    assert payload["model_version"] == champion.version and payload["mlflow_run_id"] == report.mlflow_run_id
    worst = payload["worst_features"]
    assert worst[0]["psi"] == pytest.approx(max(f.psi for f in report.features), abs=1e-6)
    assert {w["feature"] for w in worst} >= {"tenure", "monthly_charges"}
    # events are sent in order: the drifted one has arrived, so a stable one would have too
    assert drift_events(str(same)) == []

    client = MlflowClient()
    for state, result in ((stable_state, stable), (drifted_state, report)):
        run = client.get_run(result.mlflow_run_id)
        assert client.get_experiment(run.info.experiment_id).name == "churn-monitoring"
        assert run.data.params["data_uri"] == result.data_uri
        assert run.data.params["model_version"] == champion.version
        assert run.data.params["reference_uri"] == str(small_churn_csv)
        assert run.data.metrics["drifted"] == float(result.drifted)
        assert run.data.metrics["psi.tenure"] == pytest.approx(next(f.psi for f in result.features
                                                                     if f.feature == "tenure"))
        assert {"prediction_psi", "drifted_features"} <= set(run.data.metrics)
        assert "drift_report.json" in {a.path for a in client.list_artifacts(run.info.run_id)}

        artifacts = artifacts_of(state.state_details.flow_run_id)
        assert {"drift-report", "drift-features"} <= set(artifacts)
        table = artifacts["drift-features"].data
        rows = json.loads(table) if isinstance(table, str) else table
        assert len(rows) == len(result.features)
        assert sum(row["drifted"] for row in rows) == len(result.drifted_features)
    assert "**drifted**" in artifacts_of(drifted_state.state_details.flow_run_id)["drift-report"].data


def test_thresholds_decide_the_verdict(workspace, fast_config, generate_churn):
    """The same mild shift is drift under strict thresholds and not under the defaults."""
    train(config=fast_config(*CHEAP))
    path = workspace / "mild.csv"
    frame = generate_churn(rows=1500, seed=23)
    frame["monthly_charges"] = frame["monthly_charges"] + 2  # psi ~0.03: noise is ~0.01
    frame.to_csv(path, index=False)

    default = drift_monitor(data_uri=str(path))
    # a plain mapping, as the UI form or a deployment passes it: validated into DriftThresholds
    strict = drift_monitor(data_uri=str(path), model_ref="1", thresholds={"psi": 0.01, "prediction_psi": 5.0})
    assert not default.drifted
    assert strict.drifted and "monthly_charges" in {f.feature for f in strict.drifted_features}
    assert strict.model_version == "1" and strict.thresholds == DriftThresholds(psi=0.01, prediction_psi=5.0)
    assert wait_for_drift_event(str(path))[0].payload["drifted"] is True


def test_without_a_champion_the_flow_fails_clearly(workspace, small_churn_csv):
    state = drift_monitor(data_uri=str(small_churn_csv), return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, LookupError) and "'churn-classifier' is not registered" in str(error)


def test_flow_parameters_are_a_typed_form():
    """The Prefect UI renders `drift-monitor`'s parameters from this schema."""
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(drift_monitor).model_dump()
    assert set(schema["properties"]) == {"data_uri", "model_name", "model_ref", "thresholds", "experiment"}
    assert schema["required"] == ["data_uri"]
    thresholds = schema["definitions"]["DriftThresholds"]
    assert thresholds["additionalProperties"] is False
    assert thresholds["properties"]["psi"]["default"] == 0.2
    assert thresholds["properties"]["min_drifted_features"]["default"] == 1
