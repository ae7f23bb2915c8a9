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


def test_a_run_resumed_from_a_saved_checkpoint_ends_exactly_where_an_uninterrupted_one_does(tmp_path):
    """The checkpoint holds Adam's moments and step counts (not only the weights), and every epoch
    shuffles and drops out from its own seed: resuming after epoch 2 of 5 gives the same weights
    and history as never stopping. Without the optimizer state the resumed run would differ."""
    from mlpipe.compute.torch_loop import train_network
    from mlpipe.model.mlp import load_state, save_state

    X, y = _data()
    args = (X[:500], y[:500], X[500:], y[500:])
    params = {"hidden": (16, 8), "dropout": 0.2, "patience": None, "learning_rate": 1e-2, "seed": 3}
    whole = train_network(*args, epochs=5, **params)
    first = train_network(*args, epochs=2, **params)
    assert first["optimizer"] and any(name.endswith(".exp_avg_sq") for name in first["optimizer"])
    save_state(first, tmp_path)
    restored = load_state(tmp_path)
    resumed = train_network(*args, epochs=5, state=restored, **params)
    assert [row["epoch"] for row in resumed["history"]] == [1, 2, 3, 4, 5]
    for a, b in zip(resumed["last_weights"], whole["last_weights"]):
        np.testing.assert_array_equal(a, b)
    assert [row["train_loss"] for row in resumed["history"]] == [row["train_loss"] for row in whole["history"]]

    without_optimizer = train_network(*args, epochs=5, state={**restored, "optimizer": None}, **params)
    assert any(not np.array_equal(a, b) for a, b in zip(without_optimizer["last_weights"], whole["last_weights"]))
