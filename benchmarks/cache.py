"""Cold vs cached `mlpipe train` on the bundled sample, as a user runs it (wall time of the
whole command: interpreter start, temporary Prefect server, pipeline, exit).

    .venv/bin/python benchmarks/cache.py [--repeats 3] [--rows N] [--config conf/churn.yaml]

`--rows N` trains on N generated rows instead of the 5,000-row sample: fixed costs (Python,
the temporary Prefect server) weigh less as the data grows.

Each repeat uses a fresh project home (empty MLflow store and cache): one cold run, then one
cached run of the same data and config. The local Prefect server mlpipe keeps between commands
is up before the first run (benchmarks/orchestration.py measures its start). Prints the
medians and cached/cold.

Also the cached rerun's import floor, measured in the same project home after the cached run:
a process that only imports and opens what that rerun cannot skip, as the command does (the
collector paused), and exits: the config with its model parameters checked (scikit-learn,
SciPy), the flow's modules (Prefect, pandas, the pipeline's tasks), and the MLflow store the
registry check reads (MLflow, SQLAlchemy, alembic). floor/cold is the lowest cached/cold a
rerun of this design can reach (one process that checks the config's model parameters, loads
its cached scikit-learn objects and asks the registry); cached - floor is the rerun's own work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from pipeline_vs_recipe import command_env, start_kept_server  # noqa: E402  (benchmarks/ is on sys.path)


def timed_run(config: Path, home: Path, data: Path) -> float:
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("mlpipe")), "train", "--config", str(config),
                    "--data", str(data)],
                   env=command_env(home), cwd=home, check=True, capture_output=True)
    return time.perf_counter() - started


# What an identical rerun must import before it can answer "already registered", then exit;
# prints the wall-clock time at which each part ended.
FLOOR = """
import json, os, sys, time
from mlpipe.cli.local_server import imports_without_gc
marks = {"interpreter": time.time()}
with imports_without_gc():
    from mlpipe.core.config import load_config
    config = load_config(sys.argv[1], data_uri=sys.argv[2])
    marks["config"] = time.time()  # pydantic, numpy, scikit-learn and SciPy for the model parameters
    import mlpipe.flows.training
    marks["flow modules"] = time.time()  # Prefect, pandas, pyarrow, the pipeline's tasks
from mlpipe.adapters.mlflow.tracking import client
client().search_registered_models(max_results=1)
marks["mlflow store"] = time.time()  # MLflow, SQLAlchemy, alembic, the schema check
print(json.dumps(marks))
sys.stdout.flush()
os._exit(0)
"""
PARTS = ("interpreter", "config", "flow modules", "mlflow store")


def import_floor(config: Path, home: Path, data: Path) -> tuple[float, dict[str, float]]:
    """The floor process's wall time, and how long each of its parts took."""
    started, wall_started = time.perf_counter(), time.time()
    done = subprocess.run([sys.executable, "-c", FLOOR, str(config), str(data)], env=command_env(home), cwd=home,
                          check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    marks = json.loads(done.stdout.strip().splitlines()[-1])
    ends = [wall_started, *(marks[part] for part in PARTS)]
    return seconds, {part: ends[i + 1] - ends[i] for i, part in enumerate(PARTS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--config", type=Path, default=ROOT / "conf" / "churn.yaml")
    args = parser.parse_args()
    start_kept_server()
    cold, cached, floor, parts = [], [], [], {part: [] for part in PARTS}
    with tempfile.TemporaryDirectory() as scratch:
        data = ROOT / "data" / "churn.csv"
        if args.rows:
            sys.path.insert(0, str(ROOT / "data"))
            from generate_churn import generate_churn

            data = Path(scratch) / f"churn_{args.rows}.csv"
            generate_churn(args.rows).to_csv(data, index=False)
        print(f"data: {data.name}, {args.repeats} repeats")
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as home:
                cold.append(timed_run(args.config.resolve(), Path(home), data))
                cached.append(timed_run(args.config.resolve(), Path(home), data))
                seconds, took = import_floor(args.config.resolve(), Path(home), data)
                floor.append(seconds)
                for part in PARTS:
                    parts[part].append(took[part])
    c, h, f = statistics.median(cold), statistics.median(cached), statistics.median(floor)
    print(f"cold   median {c:6.2f} s  runs {[round(x, 2) for x in cold]}")
    print(f"cached median {h:6.2f} s  runs {[round(x, 2) for x in cached]}")
    print(f"floor  median {f:6.2f} s  runs {[round(x, 2) for x in floor]}  (imports a cached rerun cannot skip)")
    print("floor's parts (median s): " + ", ".join(f"{part} {statistics.median(parts[part]):.2f}" for part in PARTS)
          + "  (interpreter: start, until the pipeline's first import)")
    print(f"cached/cold = {h / c:.2f}  (cold/cached = {c / h:.1f}x)")
    print(f"floor/cold = {f / c:.2f}; cached - floor = {h - f:.2f} s (the rerun's own work)")


if __name__ == "__main__":
    main()
