"""Peak resident memory of `mlpipe train` on a big table, against the table's own size.

    .venv/bin/python benchmarks/peak_memory.py [--rows 1000000] [--repeats 3]

`--rows` generated rows (data/generate_churn.py) are written as a CSV. The in-memory frame is
that file as the `load` task reads it (`mlpipe.data.reader.read_dataset`), measured with
`DataFrame.memory_usage(deep=True)`. Then `--repeats` times, `mlpipe train --config
conf/churn.yaml --data FILE` runs as a fresh process with a fresh project home (MLflow store and
step cache), the local Prefect server mlpipe keeps between commands already up (it is its own
process, not counted), and the peak resident set size of that process is read from the kernel
when it exits (ru_maxrss of a small launcher's one child: the high-water mark, not a sample).
Prints every run's peak, the median, median / frame, wall time and holdout roc_auc, and the
target: peak RSS <= 4x the in-memory frame at 1M rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from generate_churn import generate_churn  # noqa: E402
from pipeline_vs_recipe import start_kept_server, timed_command  # noqa: E402

# A process forked from this one (which holds the generated table) would start with this
# process's resident pages counted as its own: the command is started from a small launcher,
# which reports the high-water mark of its one child.
_LAUNCHER = ("import resource, subprocess, sys\n"
             "code = subprocess.call(sys.argv[2:])\n"
             "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
             "sys.exit(code)\n")


def peak_of(command: list[str], home: Path) -> tuple[int, float, float]:
    """(peak RSS in KiB, wall seconds, holdout roc_auc) of `command` run in project home `home`."""
    peak_file = home / "peak-rss-kib"
    seconds, auc = timed_command([sys.executable, "-c", _LAUNCHER, str(peak_file), *command], home,
                                 r"roc_auc\s*\S\s*([0-9.]+)", " ".join(command))
    return int(peak_file.read_text()), seconds, auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from mlpipe.core.config import load_config
    from mlpipe.data.reader import read_dataset

    config = ROOT / "conf" / "churn.yaml"
    data = load_config(config).data
    start_kept_server()
    peaks, walls, aucs = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / f"churn_{args.rows}.csv"
        generate_churn(args.rows).to_csv(path, index=False)
        frame_kib = int(read_dataset(str(path), data.format, data.csv).memory_usage(deep=True).sum()) // 1024
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as home:
                peak, seconds, auc = peak_of([str(BIN / "mlpipe"), "train", "--config", str(config),
                                              "--data", str(path)], Path(home))
            peaks.append(peak)
            walls.append(seconds)
            aucs.append(auc)
    median = statistics.median(peaks)
    print(f"rows: {args.rows:,}, {args.repeats} repeats; in-memory frame {frame_kib:,} KiB ({frame_kib / 1024:.1f} MiB)")
    print(f"peak RSS  {median:,.0f} KiB (min {min(peaks):,}, max {max(peaks):,}) = {median / frame_kib:.2f}x the frame")
    print(f"wall      {statistics.median(walls):.1f} s (min {min(walls):.1f}, max {max(walls):.1f}); "
          f"holdout roc_auc {statistics.median(aucs):.4f}")
    verdict = ("met" if median <= 4 * frame_kib else "NOT met") if args.rows >= 1_000_000 else \
        f"not judged on {args.rows:,} rows"
    print(f"target: peak RSS <= 4x the in-memory frame at 1M rows: {verdict}")


if __name__ == "__main__":
    main()
