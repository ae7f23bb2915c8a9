"""The mlp family without Ray: the torch-only loop, the numpy forward pass, saving with skops and
loading without torch, and the config check when torch is missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[3]


def _data(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype("float32")
    y = (X[:, 0] - X[:, 1] + rng.normal(0, 0.5, n) > 0).astype("float32")
    return X, y


def test_choosing_mlp_without_torch_fails_at_config_load_with_the_install_command(monkeypatch):
    from mlpipe.core.config import ConfigError, load_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(ConfigError, match=r"model.*mlp.*pip install -e '\.\[torch\]'"):
        load_config(ROOT / "conf" / "churn.yaml", ["model.family=mlp"])
    load_config(ROOT / "conf" / "churn.yaml")  # other families do not need torch


def test_numpy_forward_pass_equals_the_torch_network():
    torch = pytest.importorskip("torch", reason="needs the torch extra")
    from mlpipe.compute.torch_loop import build_network, weights_of
    from mlpipe.model.mlp import forward_numpy

    torch.manual_seed(0)
    network = build_network(6, (16, 8)).eval()
    X, _ = _data(50)
    with torch.no_grad():
        expected = torch.sigmoid(network(torch.as_tensor(X)).squeeze(1)).numpy()
    np.testing.assert_allclose(forward_numpy(weights_of(network), X), expected, rtol=1e-5, atol=1e-6)


def test_fitted_classifier_saves_with_skops_and_loads_without_torch(tmp_path, python_without):
    pytest.importorskip("torch", reason="fitting needs the torch extra")
    import skops.io

    from mlpipe.adapters.mlflow.models import trusted_types
    from mlpipe.model.mlp import MLPNetClassifier

    X, y = _data()
    labels = np.where(y == 1, "Yes", "No")
    model = MLPNetClassifier(hidden_layers=[16], epochs=4, num_workers=0, patience=None, learning_rate=1e-2).fit(X, labels)
    assert list(model.classes_) == ["No", "Yes"] and len(model.history_) == 4 and model.ray_job_id_ == ""
    proba = model.predict_proba(X)
    assert proba.shape == (600, 2) and roc_auc_score(y, proba[:, 1]) > 0.85
    assert set(model.predict(X)) <= {"No", "Yes"}
    path = tmp_path / "model.skops"
    skops.io.dump(model, path)
    np.save(tmp_path / "X.npy", X)
    types = trusted_types(model)  # raises if a type is outside the allow-list
    assert "mlpipe.model.mlp.MLPNetClassifier" in types
    code = ("import numpy as np, skops.io\n"
            f"m = skops.io.load({str(path)!r}, trusted={types!r})\n"
            "assert not any(name.split('.')[0] in ('torch', 'ray') for name in sys.modules)\n"
            f"print(float(m.predict_proba(np.load({str(tmp_path / 'X.npy')!r}))[:, 1].sum().item()))")
    out = python_without(code, blocked=("torch", "ray"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout) == pytest.approx(proba[:, 1].sum(), rel=1e-12)


def test_invalid_mlp_params_fail_at_config_check():
    from mlpipe.core.families import check_model_params

    with pytest.raises(ValueError, match=r"model\.params\.mlp\.learning_rate"):
        check_model_params("mlp", {"learning_rate": -1.0})
    with pytest.raises(ValueError, match=r"model\.params\.mlp\.layers is not a parameter"):
        check_model_params("mlp", {"layers": [3]})
