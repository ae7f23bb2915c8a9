"""The train flow reading s3:// through s3fs from moto's S3 server (a real HTTP server)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from mlpipe.data.reader import fingerprint_dataset
from mlpipe.flows.training import train

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_train_reads_s3_uri_from_moto_server(workspace, fast_config, small_churn_csv, s3_env):
    s3_env.upload_file(str(small_churn_csv), "bucket", "churn.csv")

    summary = train(config=fast_config(data="s3://bucket/churn.csv"))

    assert summary.decision.alias == "champion" and summary.metrics["roc_auc"] > 0.8
    version = MlflowClient().get_model_version_by_alias("churn-classifier", "champion")
    assert version.tags["mlpipe.dataset_uri"] == "s3://bucket/churn.csv"
    etag = s3_env.head_object(Bucket="bucket", Key="churn.csv")["ETag"].strip('"')
    assert version.tags["mlpipe.dataset_fingerprint"] == f"etag:{etag}"


def test_s3_fingerprint_follows_the_object(s3_env, small_churn_csv, generate_churn, tmp_path):
    s3_env.upload_file(str(small_churn_csv), "bucket", "data/a.csv")
    first = fingerprint_dataset("s3://bucket/data/a.csv")
    assert fingerprint_dataset("s3://bucket/data/a.csv") == first

    changed = tmp_path / "b.csv"
    generate_churn(rows=300, seed=3).to_csv(changed, index=False)
    s3_env.upload_file(str(changed), "bucket", "data/a.csv")
    assert fingerprint_dataset("s3://bucket/data/a.csv").value != first.value


@pytest.mark.slow  # over 10 s
def test_task_cache_can_live_on_s3(workspace, fast_config, small_churn_csv, s3_env, task_states):
    config = fast_config("cache.storage=s3://bucket/mlpipe-cache")
    first = train(config=config, return_state=True)
    second = train(config=config, return_state=True)

    assert task_states(second.state_details.flow_run_id, "fit")["fit"] == "Cached"
    assert second.result().version == first.result().version
    keys = [o["Key"] for o in s3_env.list_objects_v2(Bucket="bucket", Prefix="mlpipe-cache/").get("Contents", [])]
    assert len(keys) >= 5  # load, validate, features, fit, evaluate results
    assert not (workspace / "data" / ".cache").exists()
