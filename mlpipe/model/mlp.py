"""The `mlp` model family: a PyTorch multilayer perceptron as a scikit-learn classifier.

`fit` trains data-parallel on Ray Train (mlpipe/adapters/ray_cluster.py), each worker running the
torch-only loop of mlpipe/compute/torch_loop.py on its share of the rows. The fitted estimator holds the
network's weights as numpy arrays and predicts with a numpy forward pass, so the registered
model (conform -> features -> MLPNetClassifier) is saved by skops with the trusted-type list
and loads, scores and serves without torch, Ray or pickle. This module imports numpy and
scikit-learn only; torch and Ray are imported when fitting.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted


class MLPNetClassifier(ClassifierMixin, BaseEstimator):
    """Binary MLP (ReLU hidden layers, one logit) trained with Adam on BCE, early stopping on
    the roc_auc of a stratified validation share of the training rows.

    num_workers: Ray Train workers (data-parallel, DDP); 0 trains in this process with torch.
    max_failures: Ray Train restarts after Ray lost a worker, resuming from the last epoch's checkpoint
        (an error of the training code itself is not retried).
    storage_path: where Ray Train keeps checkpoints (default: a temporary folder, removed after fit);
        on a multi-node cluster a folder every node shares, or an s3:// URI.
    Fitted: `coefs_` (weights and biases per layer, numpy), `classes_`, `history_` (per epoch:
    epoch, train_loss, val_roc_auc), `best_epoch_`, `ray_job_id_` ("" when trained in-process),
    `resumed_at_epochs_` (the checkpointed epochs Ray Train resumed from after a worker died),
    `ray_train_run_` (the run's MLflow tags: name, storage path, restarts; and `restart_causes`).
    """

    _parameter_constraints: dict = {
        "hidden_layers": [list, tuple], "dropout": [Interval(Real, 0, 1, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")], "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")], "weight_decay": [Interval(Real, 0, None, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "num_workers": [Interval(Integral, 0, None, closed="left")], "use_gpu": ["boolean"],
        "max_failures": [Interval(Integral, 0, None, closed="left")], "storage_path": [str, None],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, hidden_layers=(64, 32), dropout: float = 0.0, epochs: int = 30, batch_size: int = 128,
                 learning_rate: float = 3e-3, weight_decay: float = 0.0, patience: int | None = 5,
                 validation_fraction: float = 0.1, num_workers: int = 2, use_gpu: bool = False,
                 max_failures: int = 2, storage_path: str | None = None, random_state: int = 42):
        self.hidden_layers = hidden_layers
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.num_workers = num_workers
        self.use_gpu = use_gpu
        self.max_failures = max_failures
        self.storage_path = storage_path
        self.random_state = random_state

    def _loop_params(self) -> dict:
        return {"hidden": tuple(int(h) for h in self.hidden_layers), "dropout": float(self.dropout),
                "epochs": int(self.epochs), "batch_size": int(self.batch_size),
                "learning_rate": float(self.learning_rate), "weight_decay": float(self.weight_decay),
                "patience": self.patience, "seed": int(self.random_state)}

    def fit(self, X, y):
        self._validate_params()
        X = np.asarray(X, dtype="float32")
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"MLPNetClassifier is binary; got {len(self.classes_)} classes")
        target = (y == self.classes_[1]).astype("float32")
        fit_rows, val_rows = train_test_split(np.arange(len(X)), test_size=self.validation_fraction,
                                              stratify=target, random_state=self.random_state)
        data = {"X": X[fit_rows], "y": target[fit_rows], "X_val": X[val_rows], "y_val": target[val_rows]}
        if self.num_workers:
            state, self.ray_job_id_ = self._fit_on_ray(data)
        else:
            from mlpipe.compute.torch_loop import train_network

            state = train_network(data["X"], data["y"], data["X_val"], data["y_val"], device=self._device(),
                                  **self._loop_params())
            self.ray_job_id_ = ""
            self.ray_train_run_ = {}
        self.coefs_ = [np.asarray(w, dtype="float32") for w in state["weights"]]
        self.history_ = [dict(row) for row in state["history"]]
        self.best_epoch_ = int(state["best_epoch"])
        self.resumed_at_epochs_ = [int(epoch) for epoch in state.get("resumed_at", [])]
        self.n_features_in_ = X.shape[1]
        return self

    def _device(self) -> str:
        if self.use_gpu:
            import torch

            if torch.cuda.is_available():
                return "cuda"
        return "cpu"

    def _fit_on_ray(self, data: dict) -> tuple[dict, str]:
        from mlpipe.adapters import ray_cluster

        session = ray_cluster.connect()
        folder = self.storage_path or tempfile.mkdtemp(prefix="mlpipe-ray-train-")
        try:
            run = ray_cluster.run_torch_training(
                _train_worker, {"data": ray_cluster.put(data), "params": self._loop_params()},
                num_workers=int(self.num_workers), use_gpu=bool(self.use_gpu),
                storage_path=folder if "://" in folder else str(Path(folder).resolve()),
                name=f"mlp-{uuid.uuid4().hex[:8]}", max_failures=int(self.max_failures))
            with run.result.checkpoint.as_directory() as checkpoint:
                state = load_state(checkpoint)
        finally:
            if self.storage_path is None:
                shutil.rmtree(folder, ignore_errors=True)
        self.ray_train_run_ = {**run.tags(), "restart_causes": list(run.restarts)}
        return state, session.job_id

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "coefs_")
        positive = forward_numpy(self.coefs_, np.asarray(X, dtype="float64"))
        return np.column_stack([1.0 - positive, positive])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def forward_numpy(weights: list[np.ndarray], X: np.ndarray) -> np.ndarray:
    """The network's positive-class probability: Linear/ReLU layers, sigmoid on the last logit."""
    out = np.asarray(X, dtype="float64")
    layers = list(zip(weights[0::2], weights[1::2]))
    for i, (w, b) in enumerate(layers):
        out = out @ np.asarray(w, dtype="float64").T + np.asarray(b, dtype="float64")
        if i < len(layers) - 1:
            out = np.maximum(out, 0.0)
    return 1.0 / (1.0 + np.exp(-np.clip(out[:, 0], -500, 500)))


# -- checkpoints: numpy arrays + JSON, no pickle --------------------------------------------------

def save_state(state: dict, folder: str | Path) -> None:
    """Write a training state (mlpipe/compute/torch_loop.py) as state.npz (weights and the
    optimizer's arrays) + state.json (the rest)."""
    folder = Path(folder)
    arrays = {f"{key}_{i}": w for key in ("weights", "last_weights") for i, w in enumerate(state.get(key) or [])}
    optimizer = state.get("optimizer") or {}
    arrays.update({f"optimizer:{name}": value for name, value in optimizer.items()})
    np.savez(folder / "state.npz", **arrays)
    rest = {k: v for k, v in state.items() if k not in ("weights", "last_weights", "optimizer")}
    rest["layers"] = {key: len(state.get(key) or []) for key in ("weights", "last_weights")}
    rest["optimizer_arrays"] = sorted(optimizer)
    (folder / "state.json").write_text(json.dumps(rest))


def load_state(folder: str | Path) -> dict:
    folder = Path(folder)
    rest = json.loads((folder / "state.json").read_text())
    layers = rest.pop("layers")
    names = rest.pop("optimizer_arrays", [])
    with np.load(folder / "state.npz", allow_pickle=False) as arrays:
        for key, count in layers.items():
            rest[key] = [arrays[f"{key}_{i}"] for i in range(count)] if count else None
        rest["optimizer"] = {name: arrays[f"optimizer:{name}"] for name in names} or None
    return rest


def _train_worker(config: dict) -> None:
    """One Ray Train worker: its share of the rows (equal lengths, so DDP steps stay in step),
    the full validation set, resume from the latest checkpoint, report + checkpoint each epoch."""
    from mlpipe.adapters import ray_cluster
    from mlpipe.compute.torch_loop import train_network

    rank, world = ray_cluster.worker_rank()
    data = ray_cluster.get(config["data"])
    per_worker = len(data["X"]) // world
    rows = np.arange(rank, len(data["X"]), world)[:per_worker]
    with ray_cluster.latest_checkpoint_dir() as checkpoint:
        state = load_state(checkpoint) if checkpoint else None
    if state is not None:  # a restarted worker group: go on after the last checkpointed epoch
        state["resumed_at"] = [*state.get("resumed_at", []), state["epoch"]]

    def on_epoch(metrics: dict, state: dict) -> None:
        with tempfile.TemporaryDirectory(prefix="mlpipe-ckpt-") as folder:
            if rank == 0:
                save_state(state, folder)
            ray_cluster.report(metrics, folder if rank == 0 else None)

    train_network(data["X"][rows], data["y"][rows], data["X_val"], data["y_val"], device=ray_cluster.train_device(),
                  state=state, wrap_model=ray_cluster.prepare_model, on_epoch=on_epoch, **config["params"])
