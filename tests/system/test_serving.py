"""The champion through every MLflow client, on rows as they stand in the training file.

One registered model; the same 200 raw rows (int columns, numbers stored as text with blanks,
gaps, unseen and missing categories, missing-value tokens such as "?" and "N/A" in numeric and
text columns, blank and whitespace-only text) through `mlflow.pyfunc`, a real `mlflow models
serve` process (JSON records and split frames; numbers as ints, floats, numeric strings, " " and
null), `mlflow models predict` on the CSV file, and the batch-score flow: the same
probabilities to 1e-9, because every path goes through the model's own conform step. A blank or
a token scores as a null does. What cannot be scored is a 400 whose message names it, with no
stack trace.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlpipe.cli.local_server import free_port, wait_healthy
from mlpipe.flows.batch_inference import score
from mlpipe.flows.training import train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
BIN = Path(sys.executable).parent
MODEL_URI = "models:/churn-classifier@champion"


def raw_file(source: Path, path: Path, rows: int = 200) -> Path:
    """200 rows of the sample as an export holds them, made harder: gaps, blanks, unseen values."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False).drop(columns=["churn"]).head(rows)
    frame.loc[0:9, "tenure"] = ""                   # gaps in an int column
    frame.loc[10:14, "total_charges"] = " "         # blanks in a number-as-text column
    frame.loc[15:19, "contract"] = "Quarterly"      # a category never seen in training
    frame.loc[20:24, "payment_method"] = ""         # missing categories
    frame.loc[25:29, "monthly_charges"] = ""
    frame.loc[30:34, "tenure"] = "?"                # data.na_values tokens, in numeric and text columns
    frame.loc[35:39, "monthly_charges"] = "N/A"
    frame.loc[40:44, "contract"] = "N/A"
    frame.loc[45:49, "internet_service"] = "?"
    frame.loc[50:54, "internet_service"] = ""       # a blank text value: missing, as in training
    frame.loc[55:59, "gender"] = "  "               # whitespace only: missing too
    frame.to_csv(path, index=False)
    return path


def post(url: str, payload: dict) -> list[dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["predictions"]


def client_values(frame: pd.DataFrame) -> list[dict]:
    """Records as a JSON client sends them: ints as ints, floats as floats, text as it stands
    (numeric strings and " "), missing as null."""
    records = []
    for row in frame.to_dict("records"):
        clean = {}
        for key, value in row.items():
            if isinstance(value, float) and np.isnan(value):
                value = None
            elif isinstance(value, (np.integer, np.floating)):
                value = value.item()
            clean[key] = value
        records.append(clean)
    return records


@contextlib.contextmanager
def serving(model_uri: str, workspace: Path):
    """`mlflow models serve` on `model_uri`, on 127.0.0.1, with the venv's bin on PATH: its
    invocations URL."""
    port = free_port()
    log = open(workspace / "serve.log", "w")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1",
         "-p", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_healthy(f"http://127.0.0.1:{port}/ping", process, timeout=120)
        except RuntimeError:
            raise RuntimeError("mlflow models serve did not start:\n" + (workspace / "serve.log").read_text()[-3000:])
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture
def server(workspace):
    """`mlflow models serve` on the champion."""
    with serving(MODEL_URI, workspace) as url:
        yield url


@pytest.fixture
def champion_file(workspace, fast_config, small_churn_csv) -> Path:
    train(config=fast_config("evaluation.threshold=0.4"))
    return raw_file(small_churn_csv, workspace / "to_score.csv")


def test_every_client_scores_raw_rows_the_same_and_refuses_what_it_cannot_score(champion_file, server, workspace):
    as_read = pd.read_csv(champion_file)          # int64 tenure with gaps -> float, text charges with blanks
    assert as_read["total_charges"].dtype != "float64"

    pyfunc = mlflow.pyfunc.load_model(MODEL_URI).predict(as_read)
    assert list(pyfunc.columns) == ["probability", "label"] and len(pyfunc) == 200
    expected = pyfunc["probability"].to_numpy()
    assert (pyfunc["label"] == (expected >= 0.4)).all()  # the label uses evaluation's threshold
    as_null = as_read.copy()  # the tokens and blanks written as nulls: the same scores
    for column, rows in (("tenure", slice(30, 34)), ("monthly_charges", slice(35, 39)), ("contract", slice(40, 44)),
                         ("internet_service", slice(45, 54)), ("gender", slice(55, 59))):
        as_null.loc[rows, column] = None
    np.testing.assert_allclose(mlflow.pyfunc.load_model(MODEL_URI).predict(as_null)["probability"], expected,
                               rtol=0, atol=1e-12)

    records_in = client_values(as_read)
    records = post(server, {"dataframe_records": records_in})
    as_text = pd.read_csv(champion_file, dtype=str, keep_default_na=False)  # every value as text: "29.85", " ", ""
    split = post(server, {"dataframe_split": json.loads(as_text.to_json(orient="split", index=False))})
    for answer in (records, split):
        assert [set(row) for row in answer[:1]] == [{"probability", "label"}]
        np.testing.assert_allclose([row["probability"] for row in answer], expected, rtol=0, atol=1e-9)
        assert [row["label"] for row in answer] == pyfunc["label"].tolist()

    output = workspace / "predicted.json"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run([str(BIN / "mlflow"), "models", "predict", "-m", MODEL_URI, "-i", str(champion_file),
                    "-t", "csv", "-o", str(output), "--env-manager", "local"], env=env, check=True,
                   capture_output=True, timeout=300)
    predicted = json.loads(output.read_text())["predictions"]
    np.testing.assert_allclose([row["probability"] for row in predicted], expected, rtol=0, atol=1e-9)

    # A missing column is refused, named; so is a value that is not a number (no silent guess):
    # a 400 whose message ends in one sentence naming them, with no stack trace in the body.
    for payload, said in (
            ([{k: v for k, v in row.items() if k not in ("tenure", "gender")} for row in records_in[:3]],
             "the input lacks column(s) ['tenure', 'gender'] that the model reads; add them (values may be blank)"),
            ([records_in[0], {**records_in[1], "monthly_charges": "lots"}],
             "column 'monthly_charges' must hold numbers: 'lots' at row index 1 is not a number; send a number, "
             "or null (or leave it blank) when unknown")):
        request = urllib.request.Request(server, data=json.dumps({"dataframe_records": payload}).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.request.HTTPError) as error:
            urllib.request.urlopen(request, timeout=60)
        body = json.loads(error.value.read())
        assert error.value.code == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
        assert body["message"].endswith("Error: " + said), body["message"]
        assert "stack_trace" not in body and "Traceback" not in json.dumps(body)

    scored = workspace / "scores.parquet"
    summary = score(data_uri=str(champion_file), output_uri=str(scored), chunk_rows=64)
    assert summary.rows_rejected == 0 and summary.threshold == 0.4
    written = pd.read_parquet(scored).set_index("customer_id").loc[as_read["customer_id"]]
    np.testing.assert_allclose(written["probability"].to_numpy(), expected, rtol=0, atol=1e-9)
    assert written["label"].tolist() == pyfunc["label"].tolist()


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_a_boosting_library_model_serves_raw_rows_as_its_own_booster_scores_them(family, workspace, fast_config,
                                                                                  small_churn_csv):
    """The xgboost and lightgbm families register the same model shape (conform -> features ->
    booster in the library's own format): pyfunc and REST answer raw rows alike, and as the
    library's booster scores the features the model's own steps make."""
    from mlpipe.adapters.mlflow.models import load_version
    from mlpipe.model.boosters import REQUIREMENTS

    train(config=fast_config(f"model.family={family}", f"model.params.{family}.n_estimators=60",
                             "compute.threads=1", "promotion.min_value=0.7"))
    as_read = pd.read_csv(raw_file(small_churn_csv, workspace / "to_score.csv"))
    pyfunc = mlflow.pyfunc.load_model(MODEL_URI).predict(as_read)
    expected = pyfunc["probability"].to_numpy()
    assert pyfunc["probability"].nunique() > 50

    pipeline = load_version("churn-classifier", "1")
    booster = pipeline.named_steps["model"]
    assert type(booster).__module__ == "mlpipe.model.boosters" and REQUIREMENTS[type(booster).__name__] == family
    features = pipeline[:-1].transform(as_read)
    if family == "xgboost":
        import xgboost

        own = xgboost.Booster()
        own.load_model(bytearray(booster.booster_))
        direct = own.predict(xgboost.DMatrix(features))
    else:
        import lightgbm

        direct = lightgbm.Booster(model_str=booster.booster_).predict(features)
    np.testing.assert_allclose(expected, direct, rtol=0, atol=1e-6)

    requirements = mlflow.artifacts.download_artifacts(f"{MODEL_URI}/requirements.txt")
    assert any(line.startswith(f"{family}==") for line in Path(requirements).read_text().split())
    with serving(MODEL_URI, workspace) as url:
        records = post(url, {"dataframe_records": client_values(as_read)})
    np.testing.assert_allclose([row["probability"] for row in records], expected, rtol=0, atol=1e-9)
    assert [row["label"] for row in records] == pyfunc["label"].tolist()
