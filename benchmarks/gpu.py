"""Training on a GPU box, without Ray, MLflow or Prefect: the mlp's torch loop and XGBoost's trees.

    .venv/bin/python benchmarks/gpu.py [--rows 1000000] [--features 40] [--epochs 5] [--device cuda]

On one synthetic table (numeric features, a nonlinear binary target, a 10% validation share)
it times, on the CPU and on the GPU (`--device cuda`; `auto`: the GPU when torch sees one):
- the mlp family's loop (`mlpipe/compute/torch_loop.py`, the function each Ray Train worker
  runs) with `device=cpu|cuda`: rows/s and validation roc_auc;
- the xgboost family (`XGBoostClassifier`, `use_gpu=True` is `device="cuda"`): fit seconds,
  validation roc_auc, and the largest difference of its probabilities from the CPU model's.
Without a GPU it runs the CPU side alone (a smoke of the script). Nothing in the test suite
needs a GPU; this script is what to run on one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def table(rows: int, features: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features)).astype("float32")
    logit = X[:, 0] - 0.8 * X[:, 1] + 0.6 * X[:, 2] * X[:, 3] + np.sin(2 * X[:, 4]) + rng.normal(0, 1, rows)
    y = (logit > 0).astype("float32")
    cut = int(rows * 0.9)
    return X[:cut], y[:cut], X[cut:], y[cut:]


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def mlp_run(data, device: str, epochs: int) -> dict:
    from mlpipe.compute.torch_loop import train_network

    X, y, X_val, y_val = data
    started = time.perf_counter()
    state = train_network(X, y, X_val, y_val, hidden=(256, 128), epochs=epochs, batch_size=4096, patience=None,
                          learning_rate=3e-3, device=device)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows_per_s": len(X) * epochs / seconds, "roc_auc": state["best_auc"]}


def xgboost_run(data, use_gpu: bool, rounds: int) -> tuple[dict, np.ndarray]:
    from sklearn.metrics import roc_auc_score

    from mlpipe.model.boosters import XGBoostClassifier

    X, y, X_val, y_val = data
    started = time.perf_counter()
    model = XGBoostClassifier(n_estimators=rounds, max_depth=8, learning_rate=0.1, use_gpu=use_gpu).fit(X, y)
    seconds = time.perf_counter() - started
    proba = model.predict_proba(X_val)[:, 1]  # on the CPU, as a registered model scores
    return {"seconds": seconds, "rows_per_s": len(X) * rounds / seconds, "roc_auc": roc_auc_score(y_val, proba)}, proba


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=5, help="mlp epochs")
    parser.add_argument("--rounds", type=int, default=200, help="xgboost rounds")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--families", default="mlp,xgboost")
    args = parser.parse_args()
    gpu = args.device == "cuda" or (args.device == "auto" and cuda_available())
    if args.device == "cuda" and not cuda_available():
        raise SystemExit("--device cuda: torch sees no GPU here")
    data = table(args.rows, args.features)
    families = args.families.split(",")
    print(f"{args.rows:,} rows x {args.features} features; GPU: {'yes' if gpu else 'no (CPU side only)'}")
    print(f"{'family':<10}{'device':<8}{'seconds':>10}{'rows/s':>14}{'val roc_auc':>13}  note")
    for family in families:
        if family not in ("mlp", "xgboost"):
            raise SystemExit(f"unknown family {family!r} (mlp, xgboost)")
        results, cpu_proba = [], None
        for device in (["cpu", "cuda"] if gpu else ["cpu"]):  # the CPU first: the GPU model is compared with it
            if family == "mlp":
                results.append((device, mlp_run(data, device, args.epochs), ""))
                continue
            result, proba = xgboost_run(data, device == "cuda", args.rounds)
            note = f"max |p_gpu - p_cpu| {np.abs(proba - cpu_proba).max():.2e}" if cpu_proba is not None else ""
            cpu_proba = proba if cpu_proba is None else cpu_proba
            results.append((device, result, note))
        for device, result, note in results:
            print(f"{family:<10}{device:<8}{result['seconds']:>10.2f}{result['rows_per_s']:>14,.0f}"
                  f"{result['roc_auc']:>13.4f}  {note}")


if __name__ == "__main__":
    main()
