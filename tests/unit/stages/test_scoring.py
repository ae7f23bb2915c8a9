"""Pure functions of tasks.scoring: conforming rows to a signature, chunked reads, atomic writes."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from mlpipe.data.validation import DataValidationError
from mlpipe.model.conform import Conform, require_columns
from mlpipe.stages.scoring import (
    InputColumn,
    ScoringModel,
    conform_chunk,
    conform_step,
    output_schema,
    predictions_table,
    score_dataset,
    summary_markdown,
    write_parquet_atomically,
)

INPUTS = (InputColumn("tenure", "double"), InputColumn("charges", "double"), InputColumn("plan", "string"))
MODEL = ScoringModel("toy", "7", "champion", INPUTS)
SCORED_AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    """A small real classifier over the INPUTS columns (impute + one-hot, logistic regression)."""
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame({
        "tenure": rng.integers(0, 72, n).astype(float),
        "charges": rng.uniform(20, 120, n),
        "plan": rng.choice(["basic", "plus", "pro"], n).astype(object),
    })
    y = ((frame["charges"] > 70) ^ (frame["tenure"] > 36)).astype(int)
    features = ColumnTransformer([
        ("numeric", SimpleImputer(strategy="median"), ["tenure", "charges"]),
        ("categorical", make_pipeline(SimpleImputer(strategy="constant", fill_value="__missing__"),
                                      OneHotEncoder(handle_unknown="ignore")), ["plan"]),
    ])
    return Pipeline([("features", features), ("model", LogisticRegression())]).fit(frame, y)


def write_csv(path, text: str):
    path.write_text(text)
    return path


# -- conform_chunk ------------------------------------------------------------------------------

def _conform(chunk: pd.DataFrame) -> Conform:
    """The conform step batch scoring builds for a model registered without one (legacy)."""
    return conform_step(Pipeline([("model", LogisticRegression())]), INPUTS, chunk)


def test_numbers_stored_as_text_are_coerced_and_blanks_become_missing():
    chunk = pd.DataFrame({"tenure": ["1", " ", "3"], "charges": [10.0, np.nan, 30.5],
                          "plan": ["basic", None, "pro"], "extra": ["x", "y", "z"]})
    conformed = conform_chunk(chunk, _conform(chunk))

    assert conformed.rejected == [] and conformed.accepted.all()
    assert list(conformed.features.columns) == ["tenure", "charges", "plan"]  # signature order, extras dropped
    assert conformed.features["tenure"].dtype == "float64"
    assert conformed.features["tenure"].tolist()[0] == 1.0 and np.isnan(conformed.features["tenure"].iloc[1])
    assert conformed.features["plan"].dtype == object and conformed.features["plan"].tolist() == ["basic", None, "pro"]


def test_unparseable_numbers_reject_their_rows_with_global_row_numbers_and_infinity_is_missing():
    chunk = pd.DataFrame({"tenure": ["1", "abc", "3", "4"], "charges": ["1e400", "2", "", "x y"],
                          "plan": ["a", "b", "c", "d"]}, index=[100, 101, 102, 103])
    conformed = conform_chunk(chunk, _conform(chunk), first_row=100)

    assert conformed.accepted.tolist() == [True, False, True, False]
    assert [(r.row, r.column, r.value, r.problem) for r in conformed.rejected] == [
        (101, "tenure", "abc", "not a number"),
        (103, "charges", "x y", "not a number"),
    ]
    assert conformed.features.index.tolist() == [100, 102]
    assert conformed.features["charges"].isna().all()  # +-inf is missing, as in training; a blank too


def test_a_model_with_its_own_conform_step_gets_numbers_parsed_once_and_the_same_scores():
    chunk = pd.DataFrame({"tenure": [" 1", "abc", "3", ""], "charges": [10.0, 20.0, 30.5, 1.0],
                          "plan": ["basic", "pro", None, "pro"]})
    step = Conform(numeric=("tenure", "charges"), categorical=("plan",)).fit(chunk)
    handed_on = conform_chunk(chunk, step, transform=False)

    assert handed_on.accepted.tolist() == [True, False, True, True]
    assert handed_on.features["tenure"].dtype == "float64"  # the model's own step does not parse them again
    assert handed_on.features["plan"].equals(chunk["plan"][handed_on.accepted])  # the rest as it came
    from_text = step.transform(chunk[handed_on.accepted])
    pd.testing.assert_frame_equal(step.transform(handed_on.features), from_text)


def test_numeric_text_in_a_text_column_stays_text():
    chunk = pd.DataFrame({"tenure": [1, 2], "charges": [1.5, 2.5], "plan": [7, 8]})
    features = conform_chunk(chunk, _conform(chunk)).features
    assert features["plan"].tolist() == ["7", "8"]


def test_booleans_of_a_legacy_model_stay_categories_even_with_gaps():
    """A legacy signature called a True/False column double; training had encoded it as categories."""
    inputs = (InputColumn("paperless", "double"),)
    chunk = pd.DataFrame({"paperless": [True, None, False]})
    step = conform_step(Pipeline([("model", LogisticRegression())]), inputs, chunk)
    with_gaps = conform_chunk(chunk, step)
    assert with_gaps.rejected == [] and with_gaps.features["paperless"].tolist() == ["True", None, "False"]


def test_a_model_with_its_own_conform_step_uses_it():
    own = Conform(numeric=("tenure",), categorical=())
    model = Pipeline([("conform", own), ("model", LogisticRegression())])
    assert conform_step(model, INPUTS, pd.DataFrame()) is own


def test_missing_column_fails_naming_every_one():
    with pytest.raises(DataValidationError, match=r"\['charges', 'plan'\]") as error:
        require_columns(["tenure", "other"], [c.name for c in INPUTS])
    assert error.value.column == "charges"
    with pytest.raises(DataValidationError, match="plan"):
        _conform(pd.DataFrame({"tenure": [1], "charges": [2]}))


# -- write_parquet_atomically -----------------------------------------------------------------

def table(ids, probability, schema):
    return predictions_table(pd.Series(ids), np.asarray(probability, dtype=float), 0.5, "toy", "7", SCORED_AT,
                             schema)


def test_atomic_write_replaces_the_output_and_leaves_no_temp_file(tmp_path):
    schema = output_schema("id", pa.string())
    output = tmp_path / "out" / "predictions.parquet"  # the folder is created
    assert write_parquet_atomically([table(["a"], [0.2], schema)], str(output), schema) == 1
    rows = write_parquet_atomically([table(["b", "c"], [0.7, 0.4], schema), table(["d"], [0.5], schema)],
                                    str(output), schema)

    assert rows == 3
    written = pd.read_parquet(output)
    assert written["id"].tolist() == ["b", "c", "d"] and written["label"].tolist() == [1, 0, 1]
    assert [p.name for p in output.parent.iterdir()] == ["predictions.parquet"]


def test_a_temp_file_a_killed_writer_left_is_removed_by_the_next_write(tmp_path):
    import os
    import subprocess
    import sys

    schema = output_schema("id", pa.string())
    output = tmp_path / "predictions.parquet"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    left = tmp_path / f"predictions.parquet.tmp-{gone.pid}-0123abcd"  # SIGKILLed mid-write
    writing = tmp_path / f"predictions.parquet.tmp-{os.getpid()}-4567ef00"  # a live writer's
    left.write_bytes(b"PAR1 partial")
    writing.write_bytes(b"PAR1 partial")
    write_parquet_atomically([table(["a"], [0.2], schema)], str(output), schema)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([output.name, writing.name])


def test_failed_write_keeps_the_previous_output_and_removes_the_temp_file(tmp_path):
    schema = output_schema("id", pa.string())
    output = tmp_path / "predictions.parquet"
    write_parquet_atomically([table(["old"], [0.9], schema)], str(output), schema)
    before = output.read_bytes()

    def failing():
        yield table(["new"], [0.1], schema)
        raise RuntimeError("scoring broke half way")

    with pytest.raises(RuntimeError, match="half way"):
        write_parquet_atomically(failing(), str(output), schema)
    assert output.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.parquet"]


def test_output_that_is_a_folder_is_refused(tmp_path):
    schema = output_schema("id", pa.string())
    with pytest.raises(ValueError, match="is a folder"):
        write_parquet_atomically([], str(tmp_path), schema)


def test_empty_input_writes_an_empty_file_with_the_schema(tmp_path):
    schema = output_schema("id", pa.string())
    output = tmp_path / "p.parquet"
    assert write_parquet_atomically([], str(output), schema) == 0
    assert pq.read_schema(output).names == ["id", "probability", "label", "model_name", "model_version", "scored_at"]


# -- score_dataset ----------------------------------------------------------------------------

def test_scores_in_chunks_with_rejected_rows_numbered_across_chunks(tmp_path, pipeline):
    data = write_csv(tmp_path / "in.csv",
                     "customer_id,tenure,charges,plan,note\n"
                     "c0,1,20.5,basic,x\n"
                     "c1,5, ,plus,x\n"        # blank number: scored
                     "c2,abc,30,pro,x\n"      # row 2: rejected
                     "c3,12,45,enterprise,x\n"  # unseen category: scored
                     "c4,40,99.9,,x\n"        # missing category: scored
                     "c5,7,lots,basic,x\n"    # row 5: rejected
                     "c6,60,110,pro,x\n")
    output = tmp_path / "predictions.parquet"
    seen = []
    summary = score_dataset(pipeline, MODEL, str(data), str(output), chunk_rows=2, threshold=0.3,
                            scored_at=SCORED_AT, progress=lambda rows, rejected: seen.append((rows, rejected)))

    assert (summary.rows_in, summary.rows_scored, summary.rows_rejected) == (7, 5, 2)
    assert [(r.row, r.column, r.value) for r in summary.rejected] == [(2, "tenure", "abc"), (5, "charges", "lots")]
    assert seen == [(2, 0), (4, 1), (6, 2), (7, 2)]
    written = pd.read_parquet(output)
    assert list(written.columns) == ["customer_id", "probability", "label", "model_name", "model_version",
                                     "scored_at"]
    assert written["customer_id"].tolist() == ["c0", "c1", "c3", "c4", "c6"]
    assert written["label"].tolist() == (written["probability"] >= 0.3).astype(int).tolist()
    assert summary.rows_positive == int(written["label"].sum())
    assert set(written["model_version"]) == {"7"} and set(written["model_name"]) == {"toy"}
    assert set(written["scored_at"]) == {pd.Timestamp(SCORED_AT)}
    expected = pipeline.predict_proba(pd.DataFrame({
        "tenure": [1.0, 5.0, 12.0, 40.0, 60.0], "charges": [20.5, np.nan, 45.0, 99.9, 110.0],
        "plan": ["basic", "plus", "enterprise", None, "pro"]}))[:, 1]
    np.testing.assert_allclose(written["probability"].to_numpy(), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "predictions.parquet"]  # no temp file
    markdown = summary_markdown(summary)
    assert "| line 4 | `tenure` | `abc` | not a number |" in markdown and "rows rejected | 2" in markdown


def test_without_the_id_column_rows_are_identified_by_row_number(tmp_path, pipeline):
    data = tmp_path / "in.parquet"
    pd.DataFrame({"tenure": [1.0, 2.0, 3.0], "charges": ["5", "x", "7"], "plan": ["a", "b", "c"]}).to_parquet(data)
    output = tmp_path / "p.parquet"
    summary = score_dataset(pipeline, MODEL, str(data), str(output), chunk_rows=2)

    assert summary.id_column == "row_number" and any("row_number" in w for w in summary.warnings)
    assert pd.read_parquet(output)["row_number"].tolist() == [0, 2]


def test_missing_column_fails_before_anything_is_written(tmp_path, pipeline):
    data = write_csv(tmp_path / "in.csv", "customer_id,tenure\nc0,1\n")
    output = tmp_path / "p.parquet"
    with pytest.raises(DataValidationError, match=r"\['charges', 'plan'\]"):
        score_dataset(pipeline, MODEL, str(data), str(output))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threshold": 1.5}, "threshold"),
    ({"chunk_rows": 0}, "chunk_rows"),
    ({"id_column": "probability"}, "clashes"),
])
def test_bad_arguments_fail_with_their_name(tmp_path, pipeline, kwargs, message):
    data = write_csv(tmp_path / "in.csv", "tenure,charges,plan\n1,2,a\n")
    with pytest.raises(ValueError, match=message):
        score_dataset(pipeline, MODEL, str(data), str(tmp_path / "p.parquet"), **kwargs)


def test_output_must_not_be_the_input(tmp_path, pipeline):
    data = write_csv(tmp_path / "in.csv", "tenure,charges,plan\n1,2,a\n")
    with pytest.raises(ValueError, match="input's own URI"):
        score_dataset(pipeline, MODEL, str(data), f"file://{data}")
    assert data.read_text() == "tenure,charges,plan\n1,2,a\n"


def test_semicolon_export_with_a_byte_order_mark_scores_like_its_comma_copy(tmp_path, pipeline):
    """Batch scoring reads with the training reader's dialect detection (mlpipe.data.reader.open_chunks)."""
    rows = [["customer_id", "tenure", "charges", "plan"], ["c0", "1", "20.5", "basic"], ["c1", "5", " ", "plus"],
            ["c2", "40", "99.9", ""]]
    comma = write_csv(tmp_path / "comma.csv", "".join(",".join(row) + "\n" for row in rows))
    semicolon = tmp_path / "semicolon.csv"
    semicolon.write_bytes(b"\xef\xbb\xbf" + "".join(";".join(row) + "\r\n" for row in rows).encode())
    for source in (comma, semicolon):
        summary = score_dataset(pipeline, MODEL, str(source), str(tmp_path / f"{source.stem}.parquet"), chunk_rows=2)
        assert (summary.rows_in, summary.rows_scored) == (3, 3)
    expected, got = (pd.read_parquet(tmp_path / f"{name}.parquet") for name in ("comma", "semicolon"))
    assert got["customer_id"].tolist() == ["c0", "c1", "c2"]
    np.testing.assert_array_equal(got["probability"].to_numpy(), expected["probability"].to_numpy())


def test_a_model_with_its_own_conform_step_conforms_each_chunk_once(tmp_path, pipeline, monkeypatch):
    """The model's first step conforms the rows, so scoring hands it the accepted rows raw:
    conforming them beforehand as well did the same work twice."""
    own = Pipeline([("conform", Conform(numeric=["tenure", "charges"], categorical=["plan"])
                     .fit(pd.DataFrame({"tenure": [1.0], "charges": [2.0], "plan": ["basic"]}))),
                    *pipeline.steps])
    calls = []
    real = Conform.transform
    monkeypatch.setattr(Conform, "transform", lambda self, X: calls.append(len(X)) or real(self, X))
    data = write_csv(tmp_path / "in.csv", "customer_id,tenure,charges,plan\nc0,1,20.5,basic\nc1,5, ,plus\n"
                                          "c2,abc,30,pro\nc3,12,45,enterprise\nc4,40,99.9,\n")
    summary = score_dataset(own, MODEL, str(data), str(tmp_path / "own.parquet"), chunk_rows=2)
    assert summary.rows_scored == 4 and calls == [2, 1, 1]  # once per chunk, only the accepted rows
    legacy = score_dataset(pipeline, MODEL, str(data), str(tmp_path / "legacy.parquet"), chunk_rows=2)
    assert legacy.rows_scored == 4
    np.testing.assert_allclose(pd.read_parquet(tmp_path / "own.parquet")["probability"],
                               pd.read_parquet(tmp_path / "legacy.parquet")["probability"])
