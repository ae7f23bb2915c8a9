"""The MLP training loop on torch alone: arrays in, trained weights (numpy) out.

Imports torch and numpy only, so it runs where Ray, MLflow and Prefect are absent (a GPU box
with torch alone). Ray Train (mlpipe/adapters/ray_cluster.py) drives the same function on each worker,
injecting DDP through `wrap_model` and its reporting/checkpointing through `on_epoch`.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (ties get their mean rank); numpy only."""
    y = np.asarray(y).astype(bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype="float64")
    sorted_scores = np.asarray(score)[order]
    # Mean rank per run of equal scores.
    _, starts, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mean_ranks = starts + (counts + 1) / 2.0
    ranks[order] = np.repeat(mean_ranks, counts)
    return float((ranks[y].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def build_network(n_inputs: int, hidden: tuple[int, ...], dropout: float = 0.0) -> nn.Sequential:
    """Linear -> ReLU (-> Dropout) per hidden layer, then one logit."""
    layers: list[nn.Module] = []
    width = n_inputs
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def weights_of(network: nn.Module) -> list[np.ndarray]:
    """The Linear layers' weights and biases, in order, as float32 numpy arrays."""
    inner = getattr(network, "module", network)  # unwrap DDP
    return [p.detach().cpu().numpy().astype("float32").copy() for p in inner.parameters()]


def _load_weights(network: nn.Module, weights: list[np.ndarray]) -> None:
    with torch.no_grad():
        for param, value in zip(network.parameters(), weights):
            param.copy_(torch.as_tensor(value))


def _fresh_state() -> dict:
    """The state of a run that has finished no epoch yet."""
    return {"epoch": 0, "best_auc": -np.inf, "best_epoch": 0, "bad_epochs": 0, "history": [], "weights": None,
            "last_weights": None, "optimizer": None}


def optimizer_arrays(optimizer: torch.optim.Optimizer) -> dict[str, np.ndarray]:
    """The optimizer's per-parameter state (Adam's moments and step counts) as numpy arrays named
    `<parameter index>.<key>`: what a checkpoint needs so a resumed run steps as an uninterrupted one."""
    return {f"{index}.{key}": value.detach().cpu().numpy().copy() if torch.is_tensor(value) else np.asarray(value)
            for index, entries in optimizer.state_dict()["state"].items() for key, value in entries.items()}


def _load_optimizer(optimizer: torch.optim.Optimizer, arrays: dict[str, np.ndarray]) -> None:
    state: dict[int, dict] = {}
    for name, value in arrays.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = torch.as_tensor(np.asarray(value))
    saved = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduced_mean(total: float, seen: int, device: str) -> float:
    """The mean of `total / seen` over every worker's rows (this worker's own without a process group)."""
    if not _distributed():
        return total / max(seen, 1)
    sums = torch.tensor([total, float(seen)], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(sums)
    return float(sums[0] / torch.clamp(sums[1], min=1.0))


def replica_spread(network: nn.Module, device: str) -> float:
    """The largest difference of one weight between the workers' replicas (0.0: in step, as DDP
    keeps them; 0.0 without a process group)."""
    if not _distributed():
        return 0.0
    inner = getattr(network, "module", network)
    flat = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in inner.parameters()]).to(device)
    high, low = flat.clone(), flat.clone()
    torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
    torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
    return float((high - low).max())


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, X_t: torch.Tensor,
                 y_t: torch.Tensor, order: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """One optimizer step per mini-batch of rows taken in `order`: the epoch's mean training
    loss and its rows per second."""
    model.train()
    total, seen, started = 0.0, 0, time.perf_counter()
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        optimizer.zero_grad()
        loss = loss_fn(model(X_t[rows]).squeeze(1), y_t[rows])
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(rows)
        seen += len(rows)
    seconds = time.perf_counter() - started
    return _all_reduced_mean(total, seen, str(X_t.device)), seen / seconds if seconds > 0 else 0.0


def _scores(model: nn.Module, X_t: torch.Tensor) -> np.ndarray:
    """The model's logits for `X_t` in eval mode, as numpy."""
    model.eval()
    with torch.no_grad():
        return model(X_t).squeeze(1).cpu().numpy()


def _record_epoch(state: dict, metrics: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Add a finished epoch to `state`: its metrics, weights and optimizer state, and whether it
    is the best so far on validation roc_auc (else one more epoch without improvement)."""
    state["history"] = [*state["history"], metrics]
    state["epoch"] = metrics["epoch"]
    state["last_weights"] = weights_of(model)
    state["optimizer"] = optimizer_arrays(optimizer)
    if metrics["val_roc_auc"] > state["best_auc"]:
        state.update(best_auc=metrics["val_roc_auc"], best_epoch=metrics["epoch"], bad_epochs=0,
                     weights=state["last_weights"])
    else:
        state["bad_epochs"] += 1


def train_network(
    X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *,
    hidden: tuple[int, ...] = (64, 32), dropout: float = 0.0, epochs: int = 20, batch_size: int = 256,
    learning_rate: float = 1e-3, weight_decay: float = 0.0, patience: int | None = 5, seed: int = 42,
    device: str = "cpu", state: dict | None = None,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    on_epoch: Callable[[dict, dict], None] | None = None,
) -> dict:
    """Train a binary MLP with Adam on BCE; returns the state of the best epoch on validation.

    Every epoch: shuffled mini-batches over (X, y), then validation roc_auc on (X_val, y_val);
    its metrics are epoch, train_loss (the mean over every worker's rows, all-reduced),
    val_roc_auc, train_rows_per_s (this worker's rows) and, data-parallel,
    replica_weight_spread (the largest difference of a weight between the workers: 0 in step).
    Training stops after `patience` epochs without a better validation roc_auc (None: never).
    The returned (and per-epoch) state is plain data: `weights` (best epoch's arrays),
    `last_weights`, `optimizer` (Adam's state, `optimizer_arrays`), `epoch`, `best_auc`,
    `best_epoch`, `bad_epochs`, `history`; pass it back as `state` to resume after the last
    finished epoch, exactly as an uninterrupted run would go on. `on_epoch(metrics, state)` runs after
    each epoch (Ray Train reports and checkpoints there). Data-parallel callers give each worker
    its own rows of the same length, so every worker takes the same number of steps.
    """
    torch.manual_seed(seed)
    X_t = torch.as_tensor(np.asarray(X, dtype="float32"), device=device)
    y_t = torch.as_tensor(np.asarray(y, dtype="float32"), device=device)
    X_val_t = torch.as_tensor(np.asarray(X_val, dtype="float32"), device=device)
    y_val = np.asarray(y_val)
    network = build_network(X_t.shape[1], tuple(hidden), dropout).to(device)
    state = dict(state) if state else _fresh_state()
    if state.get("last_weights") is not None:
        _load_weights(network, state["last_weights"])
    model = wrap_model(network) if wrap_model else network
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    if state.get("optimizer"):
        _load_optimizer(optimizer, state["optimizer"])
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator(device="cpu")
    while state["epoch"] < epochs:
        if patience is not None and state["bad_epochs"] >= patience:
            break
        epoch = state["epoch"] + 1
        # A resumed epoch shuffles, and drops out, as the original would.
        generator.manual_seed(seed * 1_000_003 + epoch)
        torch.manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(X_t), generator=generator).to(device)
        train_loss, rows_per_s = _train_epoch(model, optimizer, loss_fn, X_t, y_t, order, batch_size)
        metrics = {"epoch": epoch, "train_loss": train_loss, "val_roc_auc": roc_auc(y_val, _scores(model, X_val_t)),
                   "train_rows_per_s": rows_per_s}
        if _distributed():
            metrics["replica_weight_spread"] = replica_spread(model, device)
        _record_epoch(state, metrics, model, optimizer)
        if on_epoch is not None:
            on_epoch(metrics, state)
    if state["weights"] is None:
        state["weights"] = weights_of(model)
    return state
