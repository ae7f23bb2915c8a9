"""Fixtures of the unit tests: a tiny fitted model, and one registered in the per-test
SQLite MLflow store (`workspace`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session")
def tiny_model():
    """(fitted ModelPipeline, its raw frame with target `y`, its feature columns): 60 rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mlpipe.core.config import FeaturesConfig
    from mlpipe.model.features import build_preprocessor, feature_spec, model_pipeline

    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({"tenure": rng.integers(0, 50, n).astype(float), "charges": rng.normal(50, 10, n),
                          "contract": pd.Series(rng.choice(["month", "year"], n), dtype="str")})
    frame["y"] = (frame["tenure"] < 20).astype(int)
    spec = feature_spec(["tenure", "charges"], ["contract"], FeaturesConfig())
    model = model_pipeline(spec, build_preprocessor(spec, FeaturesConfig()), HistGradientBoostingClassifier(max_iter=5))
    model.fit(frame[spec.columns], frame["y"].to_numpy())
    return model, frame, list(spec.columns)


@pytest.fixture
def register_tiny_model(workspace, tiny_model):
    """Registers `tiny_model` in the workspace's store: `register(name, fingerprint)` returns
    the `RegisteredVersion`; a new fingerprint makes a new version."""
    from mlpipe.adapters.mlflow.models import log_and_register
    from mlpipe.core.lineage import Lineage

    model, frame, columns = tiny_model

    def register(name: str = "m", fingerprint: str = "sha256:aa", **kwargs):
        lineage = Lineage(dataset_uri="s3://u:p@bucket/k.csv", dataset_fingerprint=fingerprint, config_hash="c1",
                          code_version="abc", source_hash="s1", flow_run_id="run-1")
        arguments = dict(model=model, model_name=name, experiment="exp", run_name="train-test",
                         example=frame[columns], params={"model.family": "hist_gradient_boosting"},
                         metrics={"roc_auc": 0.9}, plots={"curve": b"\x89PNG fake"}, extra_json={"extra": {"a": 1}},
                         config_yaml="model: {}\n", lineage=lineage)
        return log_and_register(**{**arguments, **kwargs})

    return register
