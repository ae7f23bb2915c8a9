"""A CSV as people export it (semicolons, ints with gaps, numbers as text with blanks, True/False
with gaps, `?` / `N/A` / `unknown` for missing values, a few `?` targets) trains with nothing but
the target and its positive label named: the dialect is detected, the types inferred, the tokens
read as missing and the unlabeled rows dropped, each said in a warning with its file lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mlpipe.core.config import build_config
from mlpipe.flows.training import train

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_dirty_export_trains_with_only_the_target_named(workspace, dirty_churn_csv, caplog):
    assert dirty_churn_csv.read_text().splitlines()[0].count(";") == 14
    config = build_config({
        "data": {"uri": str(dirty_churn_csv), "target": "churn", "positive_label": "Yes"},
        "evaluation": {"cv_folds": 3, "permutation_repeats": 1},  # cheaper scoring; nothing about the data
    })
    caplog.set_level(logging.INFO, logger="prefect.task_runs")
    summary = train(config=config)

    assert summary.decision.alias == "champion" and summary.metrics["roc_auc"] > 0.8
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("read 1500 rows")]
    assert loaded == ["read 1500 rows x 15 columns; CSV semicolon-delimited (detected), decimal '.', utf-8"]
    warnings = "\n".join(summary.warnings)
    assert "target 'churn': dropped 3 unlabeled row(s) (missing x3 (written '?' x3); lines " in warnings
    assert "column 'support_calls' is numeric but holds 'unknown' x" in warnings  # no default token: found
    assert "'customer_id' is unique per row and looks like an ID" in warnings
    assert "decimal comma" not in warnings and "semicolon" not in warnings

    # What reading decided is in the run (params, the profile table) and in the model card.
    from mlflow import MlflowClient

    client = MlflowClient()
    version = client.get_model_version(summary.model_name, summary.version)
    params = client.get_run(version.run_id).data.params
    assert params["data.unlabeled_rows_dropped"] == "3"
    assert list(json.loads(params["data.auto_na_values"])) == ["support_calls"]
    profile = json.loads(Path(client.download_artifacts(version.run_id, "data_profile.json", str(workspace))).read_text())
    rows = {row[0]: dict(zip(profile["columns"], row)) for row in profile["data"]}
    assert rows["tenure"]["tokens_read_as_missing"].startswith("'?' x") and rows["tenure"]["type"] == "numeric"
    assert rows["contract"]["tokens_read_as_missing"].startswith("'N/A' x")
    assert rows["customer_id"]["role"] == "ID: unique per row"
    assert "| reading | 3 unlabeled rows dropped (target missing or unparseable) |" in version.description
    assert "`support_calls`: 'unknown' x" in version.description

    from sklearn.compose import ColumnTransformer

    from mlpipe.adapters.mlflow.models import load_version

    model = load_version(summary.model_name, summary.version)
    features = next(step for _, step in model.steps if isinstance(step, ColumnTransformer))
    roles = {name: list(columns) for name, _, columns in features.transformers_}
    assert set(roles["numeric"]) == {"senior_citizen", "tenure", "monthly_charges", "total_charges",
                                     "prev_month_minutes", "current_month_minutes", "support_calls"}
    assert "paperless_billing" in roles["categorical"] and "customer_id" not in roles["categorical"]

    # The registered model scores the export's own rows, whatever way its booleans arrive.
    import mlflow
    import numpy as np
    import pandas as pd

    from mlpipe.flows.batch_inference import score

    rows = pd.read_csv(dirty_churn_csv, sep=";").head(50)
    assert rows["paperless_billing"].dropna().map(type).eq(bool).all()
    pyfunc = mlflow.pyfunc.load_model(f"models:/{summary.model_name}/{summary.version}")
    expected = pyfunc.predict(rows.drop(columns=["churn"]))["probability"].to_numpy()
    spelled = rows.assign(paperless_billing=rows["paperless_billing"].map({True: "true", False: "FALSE"}))
    np.testing.assert_allclose(pyfunc.predict(spelled)["probability"].to_numpy(), expected, rtol=0, atol=1e-12)
    flipped = rows.assign(paperless_billing=~rows["paperless_billing"].fillna(False).astype(bool))
    assert not np.allclose(pyfunc.predict(flipped)["probability"].to_numpy(), expected)  # the column counts

    subset = workspace / "fifty.csv"
    rows.to_csv(subset, sep=";", index=False)
    scored = score(data_uri=str(subset), output_uri=str(workspace / "fifty.parquet"),
                   model_ref=summary.version, model_name=summary.model_name)
    assert scored.rows_scored == 50
    written = pd.read_parquet(workspace / "fifty.parquet")
    np.testing.assert_allclose(written["probability"].to_numpy(), expected, rtol=0, atol=1e-9)
