"""What Ray costs and buys here: evaluation's CV folds, the MLP on Ray Train, a Ray job's fixed cost.

    .venv/bin/python benchmarks/distributed.py [--rows 200000] [--folds 5] [--mlp-rows 100000]
                                               [--epochs 3] [--skip cv,mlp,fixed,loop,boosters] [--all-cores]
                                               [--booster-rows 1000000,10000000] [--booster-rounds 100]
                                               [--stream-rows 1000000,10000000] [--stream-rounds 100] [--scratch DIR]

1. cv:    the 5-fold CV of evaluation (mlpipe/compute/evaluation_units.fold_scores) on a generated
          churn table of --rows rows, HistGradientBoosting (max_iter 100), local on one thread
          (with --all-cores also with every core's threads) vs Ray tasks on a local Ray with
          2 CPUs (one thread per task). Ray's start is not in the Ray figure (see 3); the
          folds' scores must be equal.
2. mlp:   MLPNetClassifier.fit with 1 and 2 Ray Train workers on --mlp-rows feature rows:
          end-to-end rows/s (epochs x rows / wall time, start-up included) and steady rows/s
          (rows trained per second in an epoch, summed over workers, from the loop's metrics).
3. fixed: the fixed cost of a Ray job: connect (a local `ray.init(num_cpus=2)`, or joining a
          running `ray start --head` cluster through RAY_ADDRESS) and a trivial task's first
          round trip, each in a fresh process.
4. loop:  the torch-only loop (mlpipe/compute/torch_loop.train_network) in this process on the CPU.
5. boosters: the xgboost and lightgbm families on a generated numeric table of each
          --booster-rows size, in one process (2 threads) against Ray Train with 2 workers on a
          local Ray with 2 CPUs, each in a fresh process: wall seconds, rows/s (rows x rounds /
          wall, start-up included), the driver's peak RSS and the largest peak RSS of a Ray
          process it started (sampled every 0.2 s), and holdout roc_auc. The rows still pass
          through the driver (the Ray Dataset is made from its frame), so Ray spreads the work,
          not the memory, until the Dataset is read from the source in blocks.
6. stream: the train path on a generated Parquet table (an ID, 20 numeric features, a target)
          of each --stream-rows size, xgboost with --stream-rounds rounds: local (one process
          reads the table whole, validates, splits, fits with 2 threads) against compute.stream
          (Ray Data reads, validates, splits, transforms and scores it in blocks; Ray Train fits
          with 2 workers; a local Ray with 2 CPUs), each in a fresh process: wall seconds,
          rows/s, holdout roc_auc, the driver's peak RSS, the largest peak RSS of a Ray process
          and the sum of the Ray processes' peaks (shared object-store pages counted in each),
          and the table's size in memory. Tables go to --scratch (default: the temp folder). A
          run that leaves the machine under 1 GB available is stopped and reported out of memory.
The default run takes about 3 minutes on 2 cores, without `boosters` and `stream` (minutes to hours by size).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def table(rows: int, seed: int = 7):
    """A generated churn table of `rows` rows (train + holdout split back together), the feature
    spec, the unfitted preprocessor and the config."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_churn", ROOT / "data" / "generate_churn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "churn.csv"
        module.generate_churn(rows=rows, seed=seed).to_csv(path, index=False)
        from mlpipe.core.config import load_config
        from mlpipe.stages.preparation import prepare_rows

        config = load_config(ROOT / "conf" / "churn.yaml",
                             ["model.family=hist_gradient_boosting", "model.params.hist_gradient_boosting.max_iter=100",
                              "data.min_rows=2"], str(path))
        train, holdout, spec_, preprocessor, _ = prepare_rows(config)
    import pandas as pd

    return pd.concat([train, holdout], ignore_index=True), spec_, preprocessor, config


def bench_cv(rows: int, folds: int, all_cores: bool) -> dict:
    from mlpipe.adapters import ray_cluster
    from mlpipe.compute.evaluation_units import fold_scores
    from mlpipe.model.features import model_pipeline
    from mlpipe.stages.training import build_estimator

    train, spec, preprocessor, config = table(rows)
    X, y = train[list(spec.columns)], train["churn"].to_numpy()
    model = model_pipeline(spec, preprocessor, build_estimator(config.model))
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # one fold at a time on one core: what each Ray task gets
        started = time.perf_counter()
        local = fold_scores(model, X, y, folds, 42)
        local_1t_s = time.perf_counter() - started
    local_s = None
    if all_cores:  # the pipeline's local default; OpenMP threads collapse when other work shares the cores
        started = time.perf_counter()
        fold_scores(model, X, y, folds, 42)
        local_s = time.perf_counter() - started
    os.environ.pop("RAY_ADDRESS", None)
    with ray_cluster.session(num_cpus=2):
        started = time.perf_counter()
        on_ray = fold_scores(model, X, y, folds, 42, run_tasks=ray_cluster.run_tasks)
        ray_s = time.perf_counter() - started
    assert on_ray == local, (on_ray, local)
    return {"rows": len(X), "folds": folds, "local_all_cores_s": local_s and round(local_s, 1),
            "local_1thread_s": round(local_1t_s, 1),
            "ray_2cpu_s": round(ray_s, 1), "speedup_vs_1thread": round(local_1t_s / ray_s, 2), "equal": on_ray == local}


def bench_mlp(rows: int, epochs: int) -> list[dict]:
    import numpy as np
    from sklearn.base import clone

    from mlpipe.adapters import ray_cluster
    from mlpipe.model.mlp import MLPNetClassifier

    train, spec, preprocessor, _ = table(rows, seed=8)
    features = clone(preprocessor).fit_transform(train[list(spec.columns)])
    y = train["churn"].to_numpy()
    out = []
    with ray_cluster.session(num_cpus=2):
        for workers in (1, 2):
            model = MLPNetClassifier(epochs=epochs, patience=None, num_workers=workers, batch_size=256)
            started = time.perf_counter()
            model.fit(features, y)
            seconds = time.perf_counter() - started
            trained = len(features) * (1 - model.validation_fraction)
            steady = float(np.median([row["train_rows_per_s"] for row in model.history_])) * workers
            out.append({"workers": workers, "rows": len(features), "epochs": epochs, "wall_s": round(seconds, 1),
                        "end_to_end_rows_per_s": round(epochs * trained / seconds),
                        "steady_rows_per_s": round(steady)})
    return out


FIXED = """
import os, time, json
t0 = time.perf_counter()
from mlpipe.adapters import ray_cluster
import ray
t1 = time.perf_counter()
ray_cluster.connect(num_cpus=2)
t2 = time.perf_counter()
ray_cluster.run_tasks(lambda x: abs(x), [(-1,)], max_retries=0)
t3 = time.perf_counter()
ray_cluster.run_tasks(lambda x: abs(x), [(-1,)], max_retries=0)
t4 = time.perf_counter()
ray_cluster.shutdown()
print(json.dumps({"import_s": round(t1 - t0, 2), "connect_s": round(t2 - t1, 2),
                  "first_task_s": round(t3 - t2, 3), "next_task_s": round(t4 - t3, 4)}))
"""


def bench_fixed() -> dict:
    python = sys.executable
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    local = json.loads(subprocess.run([python, "-c", FIXED], capture_output=True, text=True, env=env, cwd=ROOT,
                                      check=True, timeout=300).stdout.strip().splitlines()[-1])
    ray = str(Path(python).with_name("ray"))
    scratch = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cluster_env = {**env, "RAY_TMPDIR": scratch}
    try:
        subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus",
                        "2", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", scratch],
                       capture_output=True, env=cluster_env, check=True, timeout=180)
        cluster = json.loads(subprocess.run(
            [python, "-c", FIXED], capture_output=True, text=True, cwd=ROOT, check=True, timeout=300,
            env={**cluster_env, "RAY_ADDRESS": f"127.0.0.1:{port}"}).stdout.strip().splitlines()[-1])
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=cluster_env, timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)
    return {"local_ray": local, "running_cluster": cluster}


def bench_loop(rows: int, epochs: int) -> dict:
    import numpy as np
    import torch

    from mlpipe.compute.torch_loop import train_network

    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 40)).astype("float32")  # about as wide as the churn features
    y = (X[:, 0] - X[:, 1] + rng.normal(0, 1, rows) > 0).astype("float32")
    out = {"device": "cpu", "rows": rows, "epochs": epochs}
    default_threads = torch.get_num_threads()
    # torch's own thread count, then one thread (what a Ray Train worker with 1 CPU gets): a small
    # network's batches gain little from a second thread and lose much when the cores are shared.
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        state = train_network(X, y, X[:5000], y[:5000], epochs=epochs, patience=None, batch_size=256, device="cpu")
        out[f"rows_per_s_{threads}_threads"] = round(float(np.median([r["train_rows_per_s"]
                                                                      for r in state["history"]])))
    torch.set_num_threads(default_threads)
    return out


BOOSTER_RUN = """
import json, resource, sys, threading, time
import numpy as np
import ray  # noqa: F401  (puts Ray's bundled psutil on the path)
import psutil
from sklearn.metrics import roc_auc_score
from mlpipe.adapters import ray_cluster
from mlpipe.core.families import make_estimator
family, rows, rounds, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
X = rng.normal(size=(rows + 20_000, 20)).astype("float32")
y = (X[:, 0] - X[:, 1] + X[:, 2] * X[:, 3] + np.sin(X[:, 4]) + rng.normal(0, 1, len(X)) > 0).astype(int)
peaks, done = {}, threading.Event()
def sample():
    while not done.wait(0.2):
        for child in psutil.Process().children(recursive=True):
            try:
                peaks[child.pid] = max(peaks.get(child.pid, 0), child.memory_info().rss)
            except psutil.Error:
                pass
threading.Thread(target=sample, daemon=True).start()
if workers:
    ray_cluster.connect(num_cpus=2)
params = {"n_estimators": rounds, "num_workers": workers} if workers else {"n_estimators": rounds, "n_jobs": 2}
started = time.perf_counter()
model = make_estimator(family, params, seed=0).fit(X[:rows], y[:rows])
seconds = time.perf_counter() - started
done.set()
auc = roc_auc_score(y[rows:], model.predict_proba(X[rows:])[:, 1])
ray_cluster.shutdown()
print(json.dumps({"family": family, "rows": rows, "workers": workers, "wall_s": round(seconds, 1),
                  "rows_per_s": round(rows * rounds / seconds), "roc_auc": round(auc, 4),
                  "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "largest_ray_process_peak_rss_mb": round(max(peaks.values(), default=0) / 2**20),
                  "table_mb": round(X[:rows].nbytes / 2**20)}))
"""


def bench_boosters(sizes: list[int], rounds: int) -> list[dict]:
    """Each family and size, in one process and on Ray Train with 2 workers, each in a fresh process."""
    out = []
    for rows in sizes:
        for family in ("xgboost", "lightgbm"):
            for workers in (0, 2):
                done = subprocess.run([sys.executable, "-c", BOOSTER_RUN, family, str(rows), str(rounds), str(workers)],
                                      capture_output=True, text=True, cwd=ROOT, check=False,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"})
                if done.returncode != 0:
                    out.append({"family": family, "rows": rows, "workers": workers,
                                "failed": (done.stderr.strip().splitlines() or ["?"])[-1][:300]})
                else:
                    out.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print("  ", json.dumps(out[-1]), flush=True)
    return out


STREAM_RUN = r"""
import json, os, sys, threading, time
from pathlib import Path
from sklearn.metrics import roc_auc_score
from mlpipe.core.config import PipelineConfig

mode, config = sys.argv[1], PipelineConfig.model_validate_json(sys.argv[2])
peaks, done = {}, threading.Event()


def tree(root):
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, grown = {root}, True
    while grown:
        new = {pid for pid, parent in parents.items() if parent in found} - found
        found |= new
        grown = bool(new)
    return found - {root}


def sample():
    while not done.wait(0.2):
        for pid in tree(os.getpid()):
            try:
                rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                continue
            peaks[pid] = max(peaks.get(pid, 0), rss)


threading.Thread(target=sample, daemon=True).start()
started = time.perf_counter()
if mode == "stream":
    from mlpipe.adapters import ray_cluster
    from mlpipe.stages.streamed import fit_streamed

    ray_cluster.connect(num_cpus=2)
    fitted = fit_streamed(config)
    labels, scores, rows = fitted.labels, fitted.scores, fitted.validated.report.rows
else:
    from mlpipe.data.reader import read_dataset
    from mlpipe.data.splitting import split_validated
    from mlpipe.data.validation import validate_dataset
    from mlpipe.model.features import build_preprocessor, feature_spec
    from mlpipe.stages.training import fit_model

    validated = validate_dataset(read_dataset(config.data.uri), config.data, config.min_class_rows())
    split, report = split_validated(validated, config.split), validated.report
    rows = report.rows
    del validated
    spec = feature_spec(report.numeric_features, report.categorical_features, config.features,
                        list(config.data.na_values))
    model = fit_model(split.train, config.data.target, spec, build_preprocessor(spec, config.features), config.model)
    labels, scores = split.holdout[config.data.target], model.predict_proba(split.holdout[spec.columns])[:, 1]
seconds = time.perf_counter() - started
done.set()
hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
           if line.startswith("VmHWM:"))  # not ru_maxrss: it keeps the parent's RSS from the fork
print(json.dumps({"mode": mode, "rows": rows, "wall_s": round(seconds, 1), "rows_per_s": round(rows / seconds),
                  "roc_auc": round(float(roc_auc_score(labels, scores)), 4),
                  "driver_peak_rss_mb": round(hwm / 1024),
                  "largest_ray_process_peak_rss_mb": round(max(peaks.values(), default=0) / 2**20),
                  "ray_processes_peak_rss_sum_mb": round(sum(peaks.values()) / 2**20)}))
"""


def stream_table(path: Path, rows: int, features: int = 20) -> int:
    """A numeric table (an ID, `features` floats, a 0/1 target) written as Parquet in chunks of
    1M rows; returns its size in memory as pandas holds it."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng, writer, size = np.random.default_rng(0), None, 0
    for start in range(0, rows, 1_000_000):
        n = min(1_000_000, rows - start)
        x = rng.normal(size=(n, features))
        chunk = pd.DataFrame(x, columns=[f"x{i}" for i in range(features)])
        chunk.insert(0, "row_id", np.arange(start, start + n))
        chunk["y"] = (x[:, 0] - x[:, 1] + x[:, 2] * x[:, 3] + np.sin(x[:, 4]) + rng.normal(0, 1, n) > 0).astype("int64")
        table = pa.Table.from_pandas(chunk, preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=250_000)
        size += int(chunk.memory_usage(deep=True).sum())
    writer.close()
    return size


def available_mb() -> int:
    return next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemAvailable:")) // 1024


def watched_run(command: list[str], floor_mb: int = 1024) -> dict:
    """Run `command` in its own process group; stop the group when the machine has less than
    `floor_mb` MB available (before the kernel's OOM killer picks a process, maybe another one):
    {"failed": "out of memory ..."} with the run's peak RSS then. Otherwise {"stdout"} or
    {"failed": its last error line}."""
    import signal

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=ROOT, start_new_session=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
        peak, lowest = 0, available_mb()
        while child.poll() is None:
            time.sleep(0.5)
            try:
                status = Path(f"/proc/{child.pid}/status").read_text()
                peak = max(peak, next(int(line.split()[1]) for line in status.splitlines()
                                      if line.startswith("VmHWM:")) // 1024)
            except (OSError, StopIteration):
                pass
            lowest = min(lowest, available_mb())
            if lowest < floor_mb:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                return {"failed": f"out of memory: the machine had {lowest} MB available after "
                                  f"{time.perf_counter() - started:.0f} s (stopped); the process's peak RSS "
                                  f"{peak} MB", "driver_peak_rss_mb": peak}
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            return {"failed": (err.read().strip().splitlines() or ["?"])[-1][:300]}
        return {"stdout": out.read()}


def bench_stream(sizes: list[int], rounds: int, folder: str | None) -> list[dict]:
    """The train path on a Parquet table of each size: local (one process reads it whole,
    validates, splits, fits xgboost with 2 threads) against compute.stream (Ray Data blocks and
    Ray Train, 2 workers, on a local Ray with 2 CPUs), each in a fresh process."""
    from mlpipe.core.config import PipelineConfig

    out = []
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        for rows in sizes:
            path = Path(scratch) / f"table-{rows}.parquet"
            table_mb = round(stream_table(path, rows) / 2**20)
            for mode in ("local", "stream"):
                workers = 2 if mode == "stream" else 0
                config = PipelineConfig.model_validate({
                    "data": {"uri": str(path), "target": "y", "positive_label": None, "id_columns": ["row_id"]},
                    "model": {"family": "xgboost", "params": {"xgboost": {
                        "n_estimators": rounds, "num_workers": workers, "n_jobs": 1 if workers else 2}}},
                    "compute": {"backend": "ray" if workers else "local", "stream": bool(workers),
                                "ray_worker_cpus": 0.5, "ray_data_cpus": 0.5}})
                result = watched_run([sys.executable, "-c", STREAM_RUN, mode, config.model_dump_json()])
                result = result if "failed" in result else json.loads(result["stdout"].strip().splitlines()[-1])
                out.append({"mode": mode, "rows": rows, **result, "table_mb": table_mb})
                print("  ", json.dumps(out[-1]), flush=True)
            path.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--mlp-rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip", default="")
    parser.add_argument("--booster-rows", default="1000000,10000000", help="table sizes of the boosters section")
    parser.add_argument("--booster-rounds", type=int, default=100)
    parser.add_argument("--stream-rows", default="1000000,10000000",
                        help="table sizes of the stream section (local vs compute.stream on Ray)")
    parser.add_argument("--stream-rounds", type=int, default=100)
    parser.add_argument("--scratch", default=None, help="folder for the stream section's Parquet tables")
    parser.add_argument("--all-cores", action="store_true",
                        help="also time the local CV with all threads (minutes when other work shares the cores)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    results = {}
    if "fixed" not in skip:
        results["fixed_cost"] = bench_fixed()
        print("fixed cost of a Ray job:", json.dumps(results["fixed_cost"]), flush=True)
    if "cv" not in skip:
        results["cv"] = bench_cv(args.rows, args.folds, args.all_cores)
        print("5-fold CV:", json.dumps(results["cv"]), flush=True)
    if "mlp" not in skip:
        results["mlp"] = bench_mlp(args.mlp_rows, args.epochs)
        print("MLP on Ray Train:", json.dumps(results["mlp"]), flush=True)
    if "loop" not in skip:
        results["loop"] = bench_loop(args.mlp_rows, args.epochs)
        print("torch-only loop:", json.dumps(results["loop"]), flush=True)
    if "boosters" not in skip:
        print("xgboost and lightgbm, one process vs Ray Train with 2 workers:", flush=True)
        results["boosters"] = bench_boosters([int(n) for n in args.booster_rows.split(",")], args.booster_rounds)
    if "stream" not in skip:
        print("the train path on a Parquet table: local vs compute.stream (Ray Data + Ray Train, 2 workers):",
              flush=True)
        results["stream"] = bench_stream([int(n) for n in args.stream_rows.split(",")], args.stream_rounds,
                                         args.scratch)


if __name__ == "__main__":
    main()
