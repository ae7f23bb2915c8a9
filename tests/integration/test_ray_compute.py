"""Ray as a compute backend, for real: `train` through RAY_ADDRESS on a cluster the test starts,
and the mlp family on Ray Train (2 workers) registered and scored through pyfunc and batch-score.
What runs on one local Ray shared by its tests is in test_ray_local.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow
MODEL = "churn-classifier"
# mlp on the 1,500-row sample: a few epochs of a small network, learning fast enough to pass the gate
MLP = ("model.family=mlp", "model.params.mlp.num_workers=2", "model.params.mlp.epochs=8",
       "model.params.mlp.hidden_layers=[16]", "model.params.mlp.learning_rate=0.01",
       "model.params.mlp.patience=3", "evaluation.cv_folds=2", "evaluation.permutation_repeats=1")


@pytest.mark.usefixtures("prefect_server")
def test_train_runs_on_a_ray_cluster_through_ray_address(workspace, fast_config, ray_cluster, monkeypatch):
    from mlflow import MlflowClient

    from mlpipe.adapters import ray_cluster as rc
    from mlpipe.flows.training import train

    monkeypatch.setenv("RAY_ADDRESS", ray_cluster)
    try:
        summary = train(config=fast_config("model.family=logistic_regression", "compute.backend=ray"))
        session = rc.current_session()
        assert not session.started_here  # joined, not started: the cluster is not ours to stop
    finally:
        rc.shutdown()  # disconnects; the fixture stops the cluster
    client = MlflowClient()
    version = client.get_model_version_by_alias(MODEL, "champion")
    tags = client.get_run(version.run_id).data.tags
    assert tags["mlpipe.ray_job_id"] == session.job_id and tags["mlpipe.ray_address"] == ray_cluster
    assert summary.metrics["cv_roc_auc_mean"] > 0.75


@pytest.mark.usefixtures("prefect_server")
def test_mlp_trains_on_ray_train_registers_and_scores_raw_rows(workspace, fast_config, small_churn_csv,
                                                                 tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="the mlp family needs the torch extra")
    import mlflow
    from mlflow import MlflowClient

    from mlpipe.adapters import ray_cluster
    from mlpipe.flows.batch_inference import score
    from mlpipe.flows.training import train

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        train(config=fast_config(*MLP, "promotion.min_value=0.7"))
    finally:
        ray_cluster.shutdown()
    client = MlflowClient()
    version = client.get_model_version_by_alias(MODEL, "champion")
    run = client.get_run(version.run_id)
    assert run.data.params["model.family"] == "mlp" and run.data.tags["mlpipe.ray_job_id"]
    history = client.get_metric_history(run.info.run_id, "val_roc_auc")
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == list(range(1, len(history) + 1)) and 3 <= len(history) <= 8
    assert len(losses) == len(history) and losses[-1].value < losses[0].value

    raw = pd.read_csv(small_churn_csv, dtype=str, keep_default_na=False).drop(columns=["churn"]).head(200)
    champion = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    predicted = champion.predict(raw)
    assert list(predicted.columns) == ["probability", "label"] and len(predicted) == 200
    assert predicted["probability"].between(0, 1).all() and predicted["probability"].nunique() > 100

    data, output = tmp_path / "to_score.csv", tmp_path / "scored.parquet"
    raw.to_csv(data, index=False)
    summary = score(data_uri=str(data), output_uri=str(output), chunk_rows=80)
    assert summary.rows_in == 200 and summary.rows_rejected == 0
    written = pd.read_parquet(output)
    as_read = champion.predict(pd.read_csv(data))  # batch-score reads blanks as missing, as pandas does
    np.testing.assert_allclose(written["probability"].to_numpy(), as_read["probability"].to_numpy(), rtol=1e-12)
    assert (written["label"].to_numpy() == as_read["label"].to_numpy()).all()
