"""mlpipe.adapters.mlflow.versions in a real SQLite MLflow store: resolving a version number or
alias, the run of a version, its tags and descriptions."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from mlpipe.adapters.mlflow.versions import (
    ModelLookupError,
    describe_model,
    describe_version,
    resolve_model_version,
    tag_version,
    version_description,
    version_run_id,
    version_tags,
)


def test_resolve_a_number_or_an_alias(register_tiny_model):
    register_tiny_model("m")
    register_tiny_model("m", fingerprint="sha256:bb")
    MlflowClient().set_registered_model_alias("m", "champion", "1")
    assert resolve_model_version("m", "2") == "2"
    assert resolve_model_version("m", " 02 ") == "2"
    assert resolve_model_version("m", "champion") == "1"


def test_missing_models_versions_and_aliases_are_named(register_tiny_model):
    register_tiny_model("m")
    with pytest.raises(ModelLookupError, match="model 'other' is not registered: train it first"):
        resolve_model_version("other", "champion")
    with pytest.raises(ModelLookupError, match="model 'm' has no version 7"):
        resolve_model_version("m", "7")
    with pytest.raises(ModelLookupError, match="model 'm' has no alias 'challenger'"):
        resolve_model_version("m", "challenger")


def test_version_run_id_is_the_run_that_logged_it(register_tiny_model):
    version = register_tiny_model("m")
    assert version_run_id("m", version.version) == version.run_id
    MlflowClient().create_model_version("m", "file:///nowhere")  # a version without a run
    with pytest.raises(ValueError, match="has no MLflow run"):
        version_run_id("m", "2")


def test_tags_and_descriptions_round_trip(register_tiny_model):
    version = register_tiny_model("m")
    tag_version("m", version.version, {"promotion.alias": "champion", "promotion.rows": 120})
    tags = version_tags("m", version.version)
    assert tags["promotion.alias"] == "champion" and tags["promotion.rows"] == "120"
    assert tags["mlpipe.dataset_fingerprint"] == "sha256:aa"  # lineage from registration
    assert version_description("m", version.version) == ""
    describe_version("m", version.version, "# card")
    describe_model("m", "now **v1**")
    assert version_description("m", version.version) == "# card"
    assert MlflowClient().get_registered_model("m").description == "now **v1**"
