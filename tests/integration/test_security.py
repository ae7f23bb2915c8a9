"""Secrets stay out of everything the pipeline records; tampered models are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import skops.io
from mlflow import MlflowClient
from prefect.client.orchestration import get_client

from mlpipe.adapters.mlflow.models import load_version
from mlpipe.flows.training import train
from mlpipe.stages.tuning import expand_secrets

pytestmark = pytest.mark.usefixtures("prefect_server")
SECRETS = {"AWS_ACCESS_KEY_ID": "AKIAMLPIPESECRET0001", "AWS_SECRET_ACCESS_KEY": "mlpipe/SeCrEt+value/42",
           "OPTUNA_DB_PASSWORD": "pw-MLPIPE-SECRET-77"}


@pytest.fixture
def s3_with_secrets(monkeypatch, small_churn_csv, s3_endpoint, s3_bucket):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    s3_bucket("secure", {"churn.csv": small_churn_csv})


@pytest.mark.slow  # over 10 s
def test_secrets_appear_in_no_param_tag_artifact_log_or_flow_parameter(workspace, fast_config, s3_with_secrets,
                                                                        tmp_path, flow_logs):
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    state = train(config=fast_config(
        "tuning.enabled=true", "tuning.trials=2", "tuning.cv_folds=2",
        # a password placeholder: resolved from the environment only when connecting
        f"tuning.storage=sqlite:///{study_dir}/s.db?password=${{OPTUNA_DB_PASSWORD}}",
        data="s3://secure/churn.csv"), return_state=True)
    summary = state.result()
    recorded: list[str] = []

    client = MlflowClient()
    version = client.get_model_version("churn-classifier", summary.version)
    recorded += [json.dumps(version.tags), version.description,  # the model card
                 client.get_registered_model("churn-classifier").description]
    for run_id in {version.run_id, client.get_run(version.run_id).data.tags["tuning.parent_run_id"]}:
        run = client.get_run(run_id)
        recorded += [json.dumps(run.data.params), json.dumps(run.data.tags)]
        folder = Path(client.download_artifacts(run_id, "", str(tmp_path / run_id)))
        recorded += [p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file()]
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as prefect:
        recorded.append(json.dumps(prefect.read_flow_run(flow_run_id).parameters))
        recorded += flow_logs(flow_run_id)
        recorded += [json.dumps(a.data, default=str) for a in prefect.read_artifacts()
                     if a.flow_run_id == flow_run_id]
    assert len(recorded) > 20 and any("s3://secure/churn.csv" in text for text in recorded)
    for name, secret in SECRETS.items():
        assert not any(secret in text for text in recorded), f"{name} leaked"
    assert any("${OPTUNA_DB_PASSWORD}" in text for text in recorded)  # the placeholder, not the value


def test_expand_secrets_needs_the_variable(monkeypatch):
    monkeypatch.setenv("DB_PW", "x")
    assert expand_secrets("postgresql://u:${DB_PW}@h/db") == "postgresql://u:x@h/db"
    monkeypatch.delenv("DB_PW")
    with pytest.raises(ValueError, match="not set"):
        expand_secrets("postgresql://u:${DB_PW}@h/db")


class Tampered:
    """Stands for code an attacker wants run at load time."""

    def __init__(self, marker: str):
        self.marker = marker

    def __setstate__(self, state):  # skops would call this when loading an instance
        Path(state["marker"]).write_text("executed")
        self.__dict__.update(state)


def test_tampered_model_file_with_an_untrusted_type_is_refused(workspace, fast_config, tmp_path):
    summary = train(config=fast_config("model.family=logistic_regression"))
    files = list((workspace / "mlartifacts").rglob("*.skops"))
    assert files, "the model is stored with skops"
    marker = tmp_path / "marker"
    model = load_version("churn-classifier", summary.version)
    model.steps.append(("payload", Tampered(str(marker))))
    for path in files:
        path.write_bytes(skops.io.dumps(model))

    with pytest.raises(Exception, match="Untrusted types|untrusted"):
        load_version("churn-classifier", summary.version)
    assert not marker.exists()  # refused before anything of the tampered type ran
