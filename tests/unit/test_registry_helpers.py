"""Pure helpers of tasks.registry and tasks.caching (no MLflow client, no Prefect server)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from tasks.caching import step_key
from tasks.config import BucketFeature, FeaturesConfig, RatioFeature, SplitConfig
from tasks.features import build_preprocessor, feature_spec, model_pipeline
from tasks.registry import (LINEAGE_KEY, TRUSTED_TYPE_PREFIXES, Lineage, input_example, model_signature, redact_uri,
                            trusted_types)

# -- redact_uri ---------------------------------------------------------------------------------


def test_redact_user_and_password():
    redacted = redact_uri("postgresql://user:pass@host:5432/db")
    assert redacted == "postgresql://***@host:5432/db"
    assert "user" not in redacted and "pass" not in redacted


def test_redact_user_without_password():
    assert redact_uri("postgresql://admin@db.internal/mlflow") == "postgresql://***@db.internal/mlflow"


@pytest.mark.parametrize(("uri", "secret"), [
    ("s3://bucket/churn.csv?X-Amz-Signature=abc123&X-Amz-Expires=60", "abc123"),
    ("https://bucket.s3.amazonaws.com/k.csv?X-Amz-Security-Token=tok987&X-Amz-Date=1", "tok987"),
    ("s3://b/k.csv?AWSAccessKeyId=AKIA&Signature=sig555&Expires=1", "sig555"),
    ("https://host/data.csv?access_key=AK1&secret_key=SK1", "SK1"),
    ("https://host/data.csv?password=pw42", "pw42"),
])
def test_redact_query_secrets(uri, secret):
    redacted = redact_uri(uri)
    assert secret not in redacted
    assert "***" in redacted
    assert redacted.split("?")[0] == uri.split("?")[0]


def test_redact_keeps_harmless_query_params():
    redacted = redact_uri("s3://bucket/churn.csv?X-Amz-Signature=abc&versionId=v7")
    assert "versionId=v7" in redacted


@pytest.mark.parametrize("uri", [
    "data/churn.csv",
    "/abs/path/churn.parquet",
    "file:///tmp/churn.csv",
    "s3://bucket/prefix/churn.csv",
    "http://mlflow.internal:5000",
    "sqlite:////tmp/mlflow.db",
])
def test_plain_uris_unchanged(uri):
    assert redact_uri(uri) == uri


def test_redact_userinfo_and_query_secret_together():
    redacted = redact_uri("postgresql://user:pass@host/db?sslpassword=hunter2")
    assert "hunter2" not in redacted


def test_redact_ipv6_host_stays_valid():
    assert redact_uri("http://user:pw@[::1]:5000/x") == "http://***@[::1]:5000/x"


# -- model_signature / input_example -------------------------------------------------------------

def test_signature_names_every_column_and_leaves_values_to_the_conform_step():
    from mlflow.types.schema import AnyType

    signature = model_signature(["tenure", "contract"])
    assert [(c.name, c.type, c.required) for c in signature.inputs.inputs] == [
        ("tenure", AnyType(), True), ("contract", AnyType(), True)]
    assert [(c.name, c.type.name) for c in signature.outputs.inputs] == [("probability", "double"), ("label", "long")]


def test_input_example_is_json_friendly_and_leaves_the_frame_alone():
    frame = pd.DataFrame({"n": [1.5, np.nan], "s": pd.Series(["x", None], dtype="str")})
    before = frame.copy()
    example = input_example(frame)
    assert example["n"].tolist() == [1.5, None] and example["s"].tolist() == ["x", None]
    pd.testing.assert_frame_equal(frame, before)


# -- Lineage ----------------------------------------------------------------------------------

LINEAGE = Lineage(dataset_uri="postgresql://u:p@h/db", dataset_fingerprint="sha256:aa",
                  config_hash="c1", code_version="abc123", source_hash="s1", flow_run_id="run-1")


def test_lineage_key_is_stable():
    same = Lineage(**dataclasses.asdict(LINEAGE))
    assert LINEAGE.key == same.key
    assert len(LINEAGE.key) == 24


def test_lineage_key_changes_with_fingerprint_config_and_source():
    for field, value in [("dataset_fingerprint", "sha256:bb"), ("config_hash", "c2"), ("source_hash", "s2")]:
        assert dataclasses.replace(LINEAGE, **{field: value}).key != LINEAGE.key


def test_lineage_key_ignores_run_id_uri_and_commit():
    other = dataclasses.replace(LINEAGE, flow_run_id="run-2", dataset_uri="s3://b/k.csv", code_version="def")
    assert other.key == LINEAGE.key


def test_lineage_tags_redact_uri():
    tags = LINEAGE.tags()
    assert tags[LINEAGE_KEY] == LINEAGE.key
    assert tags["mlpipe.dataset_uri"] == "postgresql://***@h/db"
    assert all(key.startswith("mlpipe.") for key in tags)


# -- trusted_types ---------------------------------------------------------------------------

def test_trusted_types_of_fitted_pipeline():
    rng = np.random.default_rng(0)
    n = 40
    frame = pd.DataFrame({
        "tenure": rng.integers(0, 50, n).astype(float),
        "charges": rng.normal(50, 10, n),
        "contract": pd.Series(rng.choice(["month", "year"], n), dtype="str"),
    })
    y = (frame["tenure"] < 20).astype(int).to_numpy()
    config = FeaturesConfig(ratios=[RatioFeature(name="rate", numerator="charges", denominator="tenure")],
                            buckets=[BucketFeature(name="tb", column="tenure", edges=[12, 24])])
    spec = feature_spec(["tenure", "charges"], ["contract"], config)
    model = model_pipeline(spec, build_preprocessor(spec, config), HistGradientBoostingClassifier(max_iter=5))
    model.fit(frame[spec.columns], y)

    types = trusted_types(model)
    assert types == sorted(types)
    assert all(t.startswith(TRUSTED_TYPE_PREFIXES) for t in types)
    assert "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor" in types
    assert "tasks.features.SafeRatio" in types and "tasks.features.Bucketizer" in types
    assert "tasks.features.ModelPipeline" in types and "tasks.conform.Conform" in types


def test_trusted_types_refuses_foreign_types():
    from sklearn.preprocessing import FunctionTransformer

    with pytest.raises(ValueError, match="allow-list"):
        trusted_types(FunctionTransformer(func=pd.isna).fit(np.zeros((2, 1))))


# -- step_key ----------------------------------------------------------------------------------

def test_step_key_is_stable_and_order_sensitive():
    assert step_key("sha256:aa", SplitConfig()) == step_key("sha256:aa", SplitConfig())
    assert len(step_key("a")) == 24
    assert step_key("a", "b") != step_key("b", "a")
    assert step_key("ab") != step_key("a", "b")  # parts are separated, not concatenated


def test_step_key_uses_model_content():
    assert step_key("x", SplitConfig(seed=1)) != step_key("x", SplitConfig(seed=2))
    assert step_key("x", SplitConfig(seed=1)) == step_key("x", SplitConfig(seed=1, stratify=True))
