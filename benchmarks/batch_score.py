"""Batch scoring against a bare predict on the same rows.

    .venv/bin/python benchmarks/batch_score.py [--rows 1000000] [--repeats 3] [--family logistic_regression]

A model of `--family` is fitted (as the pipeline fits it: conform -> features -> estimator) on
20,000 generated rows; `--rows` other generated rows are written as a CSV. Then, alternating,
`--repeats` times each:
- bare: `pandas.read_csv` of the file, then one `predict_proba` of the model on the whole frame
  (the predict alone is timed as well);
- batch-score: `mlpipe.stages.scoring.score_dataset`, what the `score` flow's task runs: the file read
  in chunks, the model's own conform step, predict, labels, Parquet written atomically.
Prints the medians, rows/s and the ratios (target: batch-score <= 1.3x the bare predict).
No Prefect and no MLflow on either side: both load the same fitted object, so the ratio is the
cost of what batch scoring adds (chunked reading, rejected-row accounting, the Parquet output).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data"))

import pandas as pd  # noqa: E402
from generate_churn import generate_churn  # noqa: E402


def fitted_model(folder: Path, family: str):
    from mlpipe.core.config import load_config
    from mlpipe.stages.preparation import prepare_rows
    from mlpipe.stages.training import fit_model

    path = folder / "train.csv"
    generate_churn(20_000, seed=7).to_csv(path, index=False)
    config = load_config(ROOT / "conf" / "churn.yaml", [f"model.family={family}"], str(path))
    train, _, spec, preprocessor, _ = prepare_rows(config)
    return fit_model(train, config.data.target, spec, preprocessor, config.model), spec.columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--family", default="logistic_regression")
    args = parser.parse_args()

    from mlpipe.stages.scoring import InputColumn, ScoringModel, score_dataset

    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-score-") as tmp:
        folder = Path(tmp)
        model, columns = fitted_model(folder, args.family)
        data = folder / "score.csv"
        generate_churn(args.rows, seed=11).to_csv(data, index=False)
        scoring = ScoringModel("bench", "1", "1", tuple(InputColumn(c, "any") for c in columns))
        bare, predict_only, batch = [], [], []
        for repeat in range(args.repeats):
            for side in (("bare", "batch") if repeat % 2 == 0 else ("batch", "bare")):
                started = time.perf_counter()
                if side == "bare":
                    frame = pd.read_csv(data)
                    read = time.perf_counter()
                    probability = model.predict_proba(frame[columns])[:, 1]
                    bare.append(time.perf_counter() - started)
                    predict_only.append(time.perf_counter() - read)
                    assert len(probability) == args.rows
                    del frame
                else:
                    summary = score_dataset(model, scoring, str(data), str(folder / f"out-{repeat}.parquet"))
                    batch.append(time.perf_counter() - started)
                    assert summary.rows_scored == args.rows, summary
                print(f"{side:12s} run {repeat + 1}: {(bare if side == 'bare' else batch)[-1]:7.2f} s", flush=True)

    median = statistics.median
    print(f"\n{args.rows:,} rows, {args.family}, median of {args.repeats} (min-max)")
    for name, runs in (("bare read_csv + predict_proba", bare), ("  of which predict_proba", predict_only),
                       ("batch-score (score_dataset)", batch)):
        print(f"{name:32s} {median(runs):7.2f} s ({min(runs):.2f}-{max(runs):.2f})  "
              f"{args.rows / median(runs):>10,.0f} rows/s")
    print(f"batch-score / bare read + predict  {median(batch) / median(bare):.2f}x  (target <= 1.3x)")
    print(f"batch-score / predict alone        {median(batch) / median(predict_only):.2f}x")


if __name__ == "__main__":
    main()
