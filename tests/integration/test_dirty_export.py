"""A CSV as people export it (semicolons, ints with gaps, numbers as text with blanks, True/False
with gaps) trains with nothing but the target named: the dialect is detected, the types inferred."""

from __future__ import annotations

import logging

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
    for column in ("monthly_charges", "total_charges"):  # numbers stored as text, with blanks
        assert f"column '{column}' holds numbers stored as text: coerced" in warnings
    assert "'customer_id' is unique per row and looks like an ID" in warnings
    assert "decimal comma" not in warnings and "semicolon" not in warnings

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
