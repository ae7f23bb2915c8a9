"""tasks.registration: the lineage and what the run logs (pure), and registering in a real
SQLite MLflow store, where an identical rerun gets the existing version back."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from mlflow import MlflowClient

from mlpipe.core.config import load_config
from mlpipe.core.lineage import LINEAGE_KEY
from mlpipe.data.validation import ValidationReport
from mlpipe.stages.evaluation import Evaluation
from mlpipe.stages.registration import model_lineage, register_model, run_record

ROOT = Path(__file__).resolve().parents[3]
SECRET_URI = "s3://user:hunter2@bucket/churn.csv?X-Amz-Signature=sig42"
EVALUATION = Evaluation(metrics={"roc_auc": 0.91}, confusion=[[5, 1], [2, 4]], importances={"tenure": 0.2},
                        plots={"roc": b"png"}, sample_rows={"cv": 60}, tags={"mlpipe.eval_job": "j1"})
REPORT = ValidationReport(rows=60, numeric_features=["tenure", "charges"], categorical_features=["contract"],
                          coerced_columns={"charges": 2}, warnings=["w1"])


def config(**overrides):
    return load_config(ROOT / "conf" / "churn.yaml", [f"{k}={v}" for k, v in overrides.items()], data_uri=SECRET_URI)


def test_lineage_keys_on_fingerprint_config_and_code():
    lineage = model_lineage(config(), "sha256:aa", "flow-1")
    assert lineage.flow_run_id == "flow-1" and lineage.dataset_uri == SECRET_URI
    assert "hunter2" not in str(lineage.tags()) and "sig42" not in str(lineage.tags())
    assert model_lineage(config(), "sha256:aa", "flow-2").key == lineage.key
    assert model_lineage(config(), "sha256:bb", "flow-1").key != lineage.key
    assert model_lineage(config(**{"split.seed": 7}), "sha256:aa", "flow-1").key != lineage.key


def test_the_run_record_holds_no_secret(tiny_model):
    model, frame, columns = tiny_model
    record = run_record(model, EVALUATION, frame, columns, config(), REPORT,
                        extra_tags={"mlpipe.dataset_prefix": "s3://k:s@bucket/", "mlpipe.split": "hash"})
    assert "hunter2" not in str(record) and "sig42" not in str(record)
    assert record["params"]["data.uri"] == "s3://***@bucket/churn.csv?X-Amz-Signature=***"
    assert yaml.safe_load(record["config_yaml"])["data"]["uri"] == record["params"]["data.uri"]
    assert record["params"]["evaluation.cv_rows_used"] == "60"
    assert record["extra_tags"] == {"mlpipe.model_family": config().model.family, "mlpipe.dataset_prefix":
                                    "s3://***@bucket/", "mlpipe.split": "hash", "mlpipe.eval_job": "j1"}
    assert record["extra_json"]["validation"] == {"rows": 60, "coerced_columns": {"charges": 2}, "id_columns": [],
                                                  "missing_tokens": {}, "auto_na_values": {},
                                                  "unlabeled_rows_dropped": 0, "warnings": ["w1"]}
    assert record["params"]["data.unlabeled_rows_dropped"] == "0" and record["params"]["data.auto_na_values"] == "{}"
    assert record["tables"]["data_profile"] == []
    assert list(record["example"].columns) == columns and len(record["example"]) == 5
    assert record["step_metrics"] is None


def test_an_identical_rerun_gets_the_existing_version(workspace, tiny_model):
    model, frame, columns = copy.deepcopy(tiny_model)
    settings = config(**{"evaluation.threshold": 0.3})
    first = register_model(model, EVALUATION, frame, columns, settings, "sha256:aa", REPORT, flow_run_id="f1")
    again = register_model(model, EVALUATION, frame, columns, settings, "sha256:aa", REPORT, flow_run_id="f2")
    changed = register_model(model, EVALUATION, frame, columns, settings, "sha256:bb", REPORT, flow_run_id="f3")
    assert (first.version, first.reused) == ("1", False)
    assert (again.version, again.run_id, again.reused) == ("1", first.run_id, True)
    assert (changed.version, changed.reused) == ("2", False)
    assert model.threshold == 0.3  # the registered model labels with evaluation's threshold
    tags = MlflowClient().get_model_version(settings.tracking.model_name, "1").tags
    assert tags["mlpipe.prefect_flow_run_id"] == "f1" and tags[LINEAGE_KEY] == model_lineage(
        settings, "sha256:aa", "f1").key


def test_a_run_a_killed_attempt_left_running_is_marked_orphaned(workspace, tiny_model):
    model, frame, columns = copy.deepcopy(tiny_model)
    settings = config()
    client = MlflowClient()
    experiment = client.create_experiment(settings.tracking.experiment)
    key = model_lineage(settings, "sha256:aa", "").key
    left = client.create_run(experiment, tags={LINEAGE_KEY: key}).info.run_id
    register_model(model, EVALUATION, frame, columns, settings, "sha256:aa", REPORT)
    assert client.get_run(left).info.status == "FAILED" and "mlpipe.orphaned" in client.get_run(left).data.tags
