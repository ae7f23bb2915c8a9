"""Validation of a big table against reading it, side by side.

    .venv/bin/python benchmarks/validate.py [--rows 1000000] [--repeats 3]

`--rows` generated rows (data/generate_churn.py: a distinct text ID per row, numbers stored as
text, six text categories) are written as a CSV. Then `--repeats` times, one after the other:
- read: `mlpipe.data.reader.read_dataset`, what the `load` task runs;
- validate: `mlpipe.data.validation.validate_dataset` on the frame read, what the `validate` task
  runs (row keys, coercions, ID and leak checks), and, timed apart, its result persisted as the
  task's cache persists it (`mlpipe.tasks.caching.CompactPickle`).
Prints medians (min-max), validate/read, and the target: validate <= 3 s at 1M rows.
No Prefect and no MLflow: the functions the tasks call, in one process.
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

from generate_churn import generate_churn  # noqa: E402
from orchestration import spread  # noqa: E402  (benchmarks/ is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from mlpipe.core.config import load_config
    from mlpipe.data.reader import read_dataset
    from mlpipe.data.validation import validate_dataset
    from mlpipe.tasks.caching import CompactPickle

    config = load_config(ROOT / "conf" / "churn.yaml").data
    read, validate, persist = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / f"churn_{args.rows}.csv"
        generate_churn(args.rows).to_csv(path, index=False)
        for _ in range(args.repeats):
            started = time.perf_counter()
            frame = read_dataset(str(path), config.format, config.csv)
            read.append(time.perf_counter() - started)
            started = time.perf_counter()
            validated = validate_dataset(frame, config)
            validate.append(time.perf_counter() - started)
            started = time.perf_counter()
            CompactPickle().dumps(validated)
            persist.append(time.perf_counter() - started)
            del frame, validated
    print(f"rows: {args.rows:,}, {args.repeats} repeats")
    print(f"read      {spread(read)}")
    print(f"validate  {spread(validate)}  (validate/read = {statistics.median(validate) / statistics.median(read):.2f})")
    print(f"persist   {spread(persist)}  (the validate task's cached result)")
    verdict = ("met" if statistics.median(validate) <= 3 else "NOT met") if args.rows >= 1_000_000 else \
        f"not judged on {args.rows:,} rows"
    print(f"target: validate <= 3 s at 1M rows: {verdict}")


if __name__ == "__main__":
    main()
