"""mlpipe.compute.torch_loop: the training loop on torch alone (tensors in, a trained network out)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

pytest.importorskip("torch", reason="mlpipe.compute.torch_loop needs the torch extra")


def _data(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype("float32")
    y = (X[:, 0] - X[:, 1] + rng.normal(0, 0.5, n) > 0).astype("float32")
    return X, y


def test_numpy_roc_auc_equals_sklearn_with_ties():
    from mlpipe.compute.torch_loop import roc_auc

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    score = np.round(rng.normal(size=500) + y, 1)  # rounded: many ties
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert np.isnan(roc_auc(np.ones(5), np.arange(5.0)))


def test_loop_learns_stops_early_and_resumes():
    from mlpipe.compute.torch_loop import train_network

    X, y = _data()
    state = train_network(X[:500], y[:500], X[500:], y[500:], hidden=(16,), epochs=8, patience=None,
                          learning_rate=1e-2, device="cpu")
    assert [row["epoch"] for row in state["history"]] == list(range(1, 9))
    assert state["best_auc"] > 0.85 and state["history"][-1]["train_loss"] < state["history"][0]["train_loss"]

    noise = np.random.default_rng(5).integers(0, 2, 600).astype("float32")  # nothing to learn
    stopped = train_network(X[:500], noise[:500], X[500:], noise[500:], hidden=(4,), epochs=50, patience=2)
    assert len(stopped["history"]) < 50 and stopped["bad_epochs"] == 2
    assert stopped["history"][stopped["best_epoch"] - 1]["val_roc_auc"] == stopped["best_auc"]

    first = train_network(X[:500], y[:500], X[500:], y[500:], hidden=(16,), epochs=3, patience=None)
    resumed = train_network(X[:500], y[:500], X[500:], y[500:], hidden=(16,), epochs=5, patience=None, state=first)
    assert [row["epoch"] for row in resumed["history"]] == [1, 2, 3, 4, 5]
    assert resumed["history"][:3] == first["history"]  # kept, not retrained
