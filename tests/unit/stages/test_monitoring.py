"""tasks.monitoring: the drift report, its outputs (markdown, table, metrics, event) and the new
dataset cleaned like the training data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpipe.data.drift import DriftThresholds
from mlpipe.data.validation import DataValidationError
from mlpipe.stages.monitoring import (
    DRIFT_EVENT,
    align_current,
    compare_datasets,
    current_format,
    drift_event,
    drift_markdown,
    drift_metrics,
    drift_table,
    metric_name,
)

# -- the whole comparison and its outputs -------------------------------------------------------

def frames(n: int = 2000, shift: bool = False):
    rng = np.random.default_rng(5 if shift else 4)
    frame = pd.DataFrame({
        "tenure": rng.integers(0, 72, n).astype(float),
        "plan": rng.choice(["basic", "pro"], n, p=[0.7, 0.3]).astype(object),
    })
    if shift:
        frame["tenure"] = frame["tenure"] / 2
        frame.loc[: n // 5, "plan"] = "enterprise"
    return frame


def report(shift: bool, **kwargs):
    ref, cur = frames(), frames(shift=shift)
    rng = np.random.default_rng(9)
    return compare_datasets(ref, cur, ["tenure"], ["plan"], rng.beta(2, 5, 2000),
                            rng.beta(4, 3, 2000) if shift else rng.beta(2, 5, 2000), DriftThresholds(**kwargs),
                            data_uri="s3://bucket/new/batch.csv?X-Amz-Signature=abc", reference_uri="/data/train.csv",
                            model_name="churn", model_version="3")


def test_compare_datasets_stable_and_drifted():
    stable, drifted = report(False), report(True)
    assert not stable.drifted and stable.reasons == () and stable.prediction_psi < 0.05
    assert drifted.drifted and [f.feature for f in drifted.drifted_features] == ["tenure", "plan"]
    assert drifted.prediction_psi > 0.2 and drifted.mean_prediction_current > drifted.mean_prediction_reference
    assert drifted.worst_features(1)[0].feature in {"tenure", "plan"}
    assert drifted.rows_current == drifted.rows_reference == 2000


def test_outputs_of_a_drifted_report():
    r = report(True)
    table = drift_table(r)
    assert [set(row) for row in table] == [{"feature", "kind", "psi", "unseen_share", "missing_ref", "missing_cur",
                                            "drifted"}] * 2
    assert table[0]["psi"] >= table[1]["psi"] and all(row["drifted"] for row in table)

    markdown = drift_markdown(r)
    assert "**drifted**" in markdown and "| tenure | numeric |" in markdown and "abc" not in markdown

    metrics = drift_metrics(r)
    assert metrics["psi.tenure"] == pytest.approx(r.features[0].psi) and metrics["drifted"] == 1.0
    assert metrics["drifted_features"] == 2.0 and metrics["prediction_psi"] == pytest.approx(r.prediction_psi)
    assert metric_name("monthly charges ($)") == "monthly charges ___"

    event = drift_event(r)
    assert event["event"] == DRIFT_EVENT == "mlpipe.drift.detected"
    assert event["resource"]["prefect.resource.id"] == r.data_uri  # the retrain trigger reads it back as data_uri
    assert event["resource"]["mlpipe.prefix"] == "s3://bucket/new/"
    assert event["payload"]["drifted"] is True and event["payload"]["model_version"] == "3"
    assert [w["feature"] for w in event["payload"]["worst_features"]] == [row["feature"] for row in table]
    assert all(isinstance(v, str) for v in event["resource"].values())

    as_json = r.to_dict()
    assert "abc" not in as_json["data_uri"] and as_json["thresholds"]["psi"] == 0.2


def test_stable_report_markdown_says_what_the_reference_is():
    markdown = drift_markdown(report(False))
    assert "no drift beyond the thresholds" in markdown
    assert "- none" not in markdown and "\n- " not in markdown  # no reasons: no list at all
    assert ("| reference | features: the champion's training data `/data/train.csv` (2000 rows); predictions: its "
            "holdout (2000 rows the champion never trained on) |") in markdown
    assert "(holdout) -> " in markdown and "(new data) |" in markdown
    drifted = drift_markdown(report(True))
    assert "| | |" not in markdown  # no empty header row: the new data heads the table
    assert "thresholds.\n\n| new data | `s3://bucket/new/batch.csv?X-Amz-Signature=***` (2000 rows) |\n|---|---|" \
        in markdown
    assert "\n- " in drifted and "\n\n| new data |" in drifted  # the reasons' list, a blank line, the table


# -- the new dataset -----------------------------------------------------------------------------

def test_align_current_coerces_like_training_without_target():
    new = pd.DataFrame({
        "customer_id": ["a1", "a2", "a3"],
        "total_charges": ["10.5", " ", "n/a"],   # text numbers, a blank, and junk
        "tenure": [1, 2, 3],
        "plan": ["basic", None, "pro"],
    })
    out = align_current(new, ["tenure", "total_charges"], ["plan"])
    assert list(out.columns) == ["tenure", "total_charges", "plan"]
    assert out["total_charges"].dtype == "float64"
    assert out["total_charges"].iloc[0] == 10.5 and out["total_charges"].iloc[1:].isna().all()
    assert out["tenure"].tolist() == [1.0, 2.0, 3.0]


def test_align_current_names_a_missing_feature():
    with pytest.raises(DataValidationError, match="'plan'") as info:
        align_current(pd.DataFrame({"tenure": [1.0]}), ["tenure"], ["plan"])
    assert info.value.column == "plan"
    with pytest.raises(DataValidationError, match="empty"):
        align_current(pd.DataFrame({"tenure": []}), ["tenure"], [])


def test_current_format_prefers_the_extension():
    assert current_format("s3://b/new.parquet", "csv") == "parquet"
    assert current_format("/data/export.dat", "csv") == "csv"
