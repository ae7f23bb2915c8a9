"""mlpipe.adapters.mlflow.models: signature, input example, skops trusted types, and logging,
registering, finding and loading a model in a real SQLite MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.ensemble import HistGradientBoostingClassifier

from mlpipe.adapters.mlflow.models import (
    TRUSTED_TYPE_PREFIXES,
    find_version_by_lineage,
    input_example,
    load_version,
    model_input_schema,
    model_signature,
    trusted_types,
)
from mlpipe.core.config import BucketFeature, FeaturesConfig, RatioFeature
from mlpipe.core.lineage import LINEAGE_KEY
from mlpipe.model.features import build_preprocessor, feature_spec, model_pipeline

# -- model_signature / input_example -------------------------------------------------------------


def test_signature_names_every_column_and_leaves_values_to_the_conform_step():
    from mlflow.types.schema import AnyType

    signature = model_signature(["tenure", "contract"])  # optional: the conform step names the missing ones
    assert [(c.name, c.type, c.required) for c in signature.inputs.inputs] == [
        ("tenure", AnyType(), False), ("contract", AnyType(), False)]
    assert [(c.name, c.type.name) for c in signature.outputs.inputs] == [("probability", "double"), ("label", "long")]


def test_input_example_is_json_friendly_and_leaves_the_frame_alone():
    frame = pd.DataFrame({"n": [1.5, np.nan], "s": pd.Series(["x", None], dtype="str")})
    before = frame.copy()
    example = input_example(frame)
    assert example["n"].tolist() == [1.5, None] and example["s"].tolist() == ["x", None]
    pd.testing.assert_frame_equal(frame, before)


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
    assert "mlpipe.model.features.SafeRatio" in types and "mlpipe.model.features.Bucketizer" in types
    assert "mlpipe.model.features.ModelPipeline" in types and "mlpipe.model.conform.Conform" in types


@pytest.mark.slow  # over 10 s
def test_skops_is_imported_without_torch_and_trusts_the_same_types():
    import json
    import subprocess
    import sys

    from mlpipe.core.paths import PACKAGE_ROOT

    listing = ("import json, sys\n{}\nfrom skops.io import _trusted_types as t\n"
               "print(json.dumps(['torch' in sys.modules, sorted(t.SKLEARN_ESTIMATOR_TYPE_NAMES)]))")
    ours, plain = (json.loads(subprocess.run([sys.executable, "-c", listing.format(first)], cwd=PACKAGE_ROOT,
                                             capture_output=True, text=True, check=True).stdout)
                   for first in ("from mlpipe.adapters.mlflow.models import skops_io; skops_io()", "import skops.io"))
    pytest.importorskip("torch")  # where torch is installed, a plain import pulls it in
    assert ours[0] is False and plain[0] is True
    assert ours[1] == plain[1] and len(ours[1]) > 100


def test_trusted_types_refuses_foreign_types():
    from sklearn.preprocessing import FunctionTransformer

    with pytest.raises(ValueError, match="allow-list"):
        trusted_types(FunctionTransformer(func=pd.isna).fit(np.zeros((2, 1))))


# -- log_and_register, find, load -----------------------------------------------------------------

def test_logged_model_loads_back_and_predicts_like_the_fitted_one(register_tiny_model, tiny_model):
    model, frame, columns = tiny_model
    version = register_tiny_model("m")
    assert (version.name, version.version, version.reused) == ("m", "1", False)
    loaded = load_version("m", version.version)
    np.testing.assert_allclose(loaded.predict_proba(frame[columns]), model.predict_proba(frame[columns]))


def test_the_run_and_version_carry_lineage_params_metrics_and_artifacts(register_tiny_model):
    version = register_tiny_model("m", step_metrics=[{"epoch": 0, "train_loss": 0.7}, {"epoch": 1, "train_loss": 0.5}],
                                  tables={"leaderboard": [{"family": "a", "score": 0.9}]},
                                  extra_tags={"mlpipe.model_family": "rf", "mlpipe.model_selection": "best cv"})
    client = MlflowClient()
    run = client.get_run(version.run_id)
    tags = client.get_model_version("m", version.version).tags
    # the version keeps its lineage and what people filter on; the run keeps every tag
    assert tags["mlpipe.model_family"] == "rf" and "mlpipe.model_selection" not in tags
    assert run.data.tags["mlpipe.model_selection"] == "best cv"
    assert tags["mlpipe.dataset_uri"] == "s3://***@bucket/k.csv" == run.data.tags["mlpipe.dataset_uri"]
    assert tags[LINEAGE_KEY] == run.data.tags[LINEAGE_KEY]
    assert run.data.params == {"model.family": "hist_gradient_boosting"} and run.data.metrics["roc_auc"] == 0.9
    assert [(m.step, m.value) for m in client.get_metric_history(version.run_id, "train_loss")] == [(0, 0.7), (1, 0.5)]
    artifacts = {a.path for a in client.list_artifacts(version.run_id)}
    assert {"plots", "config.yaml", "extra.json", "leaderboard.json"} <= artifacts
    assert [a.path for a in client.list_artifacts(version.run_id, "plots")] == ["plots/curve.png"]


def test_logging_skips_mlflows_scan_of_installed_packages_and_pins_this_environment(register_tiny_model,
                                                                                   monkeypatch):
    """The requirements are read from the installed versions, so MLflow's mismatch check (a scan
    of every installed distribution's files, about 0.5 s) is skipped while logging, and only then."""
    from importlib.metadata import version as installed

    import importlib_metadata
    import mlflow.pyfunc
    from mlflow.utils import environment, requirements_utils

    scans = []
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)  # as in a fresh process
    monkeypatch.setattr(importlib_metadata, "packages_distributions", lambda: scans.append(1) or {})
    checks = environment.warn_dependency_requirement_mismatches, mlflow.pyfunc.warn_dependency_requirement_mismatches
    registered = register_tiny_model("m")
    assert scans == []
    assert (environment.warn_dependency_requirement_mismatches, mlflow.pyfunc.warn_dependency_requirement_mismatches) == checks
    requirements = mlflow.artifacts.download_artifacts(f"models:/m/{registered.version}/requirements.txt")
    pins = Path(requirements).read_text().split()
    assert f"scikit-learn=={installed('scikit-learn')}" in pins and f"mlflow=={installed('mlflow')}" in pins


def test_find_version_by_lineage_finds_the_first_identical_version(register_tiny_model):
    first = register_tiny_model("m")
    register_tiny_model("m")  # the same lineage again (registration itself does not deduplicate)
    key = MlflowClient().get_model_version("m", first.version).tags[LINEAGE_KEY]
    found = find_version_by_lineage("m", key)
    assert (found.version, found.run_id, found.reused) == ("1", first.run_id, True)
    assert find_version_by_lineage("m", "no-such-key") is None
    assert find_version_by_lineage("not-registered", key) is None


def test_model_input_schema_lists_the_signature_columns(register_tiny_model, tiny_model):
    version = register_tiny_model("m")
    assert model_input_schema("m", version.version) == [(c, "Any") for c in tiny_model[2]]
