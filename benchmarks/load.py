"""Runs sharing a machine, and many runs against one pair of servers.

    threads: N `mlpipe train` one after another, then N at once (default 4), against one MLflow
             server and one Prefect server: total wall time, and each step's slowest time, serial
             vs concurrent (the ratio should stay near 2x or below with compute.threads' default).
    load:    N `mlpipe train` at once (default 12) against one MLflow server and one Prefect
             server, on SQLite or on PostgreSQL (tests/postgres.py starts one): all complete? N
             versions, N decisions in the history, one champion, no lock, nothing left RUNNING;
             what failed, with its message.
    pool:    N flow runs of the train-manual deployment (default 12) submitted at once to one
             process work pool with a concurrency limit (default 2), served by `make worker`'s
             worker (mlpipe.cli.worker): they queue, at most the limit run at a time, and all
             complete, with the same registry checks as `load`.

    .venv/bin/python benchmarks/load.py threads [--runs 4] [--rows 5000] [--backend sqlite|postgres]
    .venv/bin/python benchmarks/load.py load [--runs 12] [--backend sqlite|postgres] [--rows 5000]
    .venv/bin/python benchmarks/load.py pool [--runs 12] [--limit 2] [--backend sqlite|postgres]

Both need a quiet machine to mean anything: every other process on it is in the measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.crash_probe import ORDER, Console  # noqa: E402 - after the path above

MODEL = "churn-classifier"
# The train flow's tasks with model.family=auto: selection comes between features and fit.
STEPS = (*ORDER["train"][:6], "select-model", *ORDER["train"][6:])
BIN = Path(sys.executable).parent
SETTINGS = ("model.family=auto", "evaluation.cv_folds=3", "evaluation.permutation_repeats=2")


@contextlib.contextmanager
def servers(folder: Path, backend: str):
    """(Prefect API URL, MLflow URL): `prefect server start` and `mlflow server` (2 workers) on
    SQLite files in `folder`, or on a PostgreSQL started here."""
    from mlpipe.cli.local_server import free_port, wait_healthy

    started, database = [], None
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env.update(PREFECT_HOME=str(folder / "prefect-home"), PREFECT_UI_ENABLED="false",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    mlflow_store = f"sqlite:///{folder / 'mlflow.db'}"
    if backend == "postgres":
        from tests.postgres import Postgres, find_binaries

        database = Postgres(find_binaries(), free_port()).start()
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database.create_database("prefect").replace(
            "postgresql://", "postgresql+asyncpg://")
        mlflow_store = database.create_database("mlflow")
    prefect_port, mlflow_port = free_port(), free_port()
    try:
        for args in ([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
                     [str(BIN / "mlflow"), "server", "--backend-store-uri", mlflow_store, "--artifacts-destination",
                      str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "2"]):
            log = open(folder / f"{Path(args[0]).name}.log", "w")
            started.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))
        wait_healthy(f"http://127.0.0.1:{prefect_port}/api/health", started[0], timeout=240)
        wait_healthy(f"http://127.0.0.1:{mlflow_port}/health", started[1], timeout=240)
        yield f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{mlflow_port}"
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
        if database is not None:
            database.stop()


def step_seconds(console: Console) -> dict[str, float]:
    """Each train step's time: from the step before it finishing to its own finish."""
    times, before = {}, console.started
    for task in STEPS:
        if (finished := console.finished_at(task)) is not None:
            times[task], before = finished - before, finished
    return times


def start_trains(count: int, folder: Path, data: Path, prefect_api: str, tracking: str) -> list[Console]:
    """`count` trains started at once, each with a split seed no earlier run used (so nothing is
    cached or reused from another run: each registers a version of its own)."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": tracking}
    env.pop("OMP_NUM_THREADS", None)  # compute.threads' own default is what is measured
    consoles = []
    for _ in range(count):
        number = len(list(folder.glob("run-*")))
        home = folder / f"run-{number}"
        home.mkdir()
        args = [str(BIN / "mlpipe"), "train", "--config", str(ROOT / "conf" / "churn.yaml"), "--data", str(data)]
        args += [item for setting in (*SETTINGS, f"split.seed={number + 1}") for item in ("--set", setting)]
        consoles.append(Console(args, {**env, "MLPIPE_HOME": str(home)}, home))
    return consoles


def threads(runs: int, rows: int, backend: str = "sqlite") -> str:
    """The table of `threads` (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="threads-") as name:
        folder = Path(name)
        data = dataset(folder, rows)
        with servers(folder, backend) as (prefect_api, tracking):
            serial, began = [], time.monotonic()
            for _ in range(runs):
                (console,) = start_trains(1, folder, data, prefect_api, tracking)
                assert console.wait(timeout=3600) == 0, console.text()[-3000:]
                serial.append(step_seconds(console))
            serial_wall, began = time.monotonic() - began, time.monotonic()
            together = start_trains(runs, folder, data, prefect_api, tracking)
            assert all(c.wait(timeout=3600) == 0 for c in together), [c.text()[-2000:] for c in together]
            concurrent_wall = time.monotonic() - began
            concurrent = [step_seconds(c) for c in together]
    lines = [f"{runs} trains of {rows} rows ({', '.join(SETTINGS)}), one MLflow and one Prefect server ({backend})", "",
             "| step | slowest serial (s) | slowest concurrent (s) | ratio |", "|---|---:|---:|---:|"]
    for step in STEPS:
        alone = max((s[step] for s in serial if step in s), default=0.0)
        shared = max((s[step] for s in concurrent if step in s), default=0.0)
        name = "start-up and resolve-data" if step == STEPS[0] else step  # from the command's start
        lines.append(f"| {name} | {alone:.2f} | {shared:.2f} | {shared / alone if alone else 0:.1f}x |")
    lines.append(f"| **total wall time** | {serial_wall:.1f} | {concurrent_wall:.1f} | "
                 f"{concurrent_wall / serial_wall:.2f}x |")
    return "\n".join(lines)


def registry(tracking: str) -> dict:
    """What the registry holds after the runs: versions, history entries, champion, locks left."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    versions = len(client.search_model_versions(f"name = '{MODEL}'"))
    history = client.get_experiment_by_name(MODEL + "-promotions")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {"versions": versions,
            "running": len(client.search_runs(experiments, "attributes.status = 'RUNNING'")),
            "entries": len(client.search_runs([history.experiment_id])) if history else 0,
            "champion": client.get_registered_model(MODEL).aliases.get("champion") if versions else None,
            "locks": len(client.search_registered_models(f"name = '{MODEL}.promotion-lock'"))}


def load(runs: int, rows: int, backend: str) -> str:
    """The table of `load` (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="load-") as name:
        folder = Path(name)
        data = dataset(folder, rows)
        with servers(folder, backend) as (prefect_api, tracking):
            began = time.monotonic()
            consoles = start_trains(runs, folder, data, prefect_api, tracking)
            codes = [c.wait(timeout=7200) for c in consoles]
            walls = [c.ended - c.started for c in consoles]  # each run's own wall time
            total = time.monotonic() - began
            held = registry(tracking)
            failures = [c.text().strip().splitlines()[-1] for c, code in zip(consoles, codes, strict=True) if code]
        locked = (folder / "prefect.log").read_text(errors="replace").count("database is locked")
    return "\n".join([f"Prefect server log: 'database is locked' x{locked}", "",
        "| backend | runs ok | versions | history entries | champion | locks left | MLflow runs left RUNNING | "
        "wall per run (median, max) | all together | failures |", "|---|---:|---:|---:|---|---:|---:|---|---:|---|",
        f"| {backend} | {codes.count(0)} of {runs} | {held['versions']} | {held['entries']} | v{held['champion']} | "
        f"{held['locks']} | {held['running']} | {statistics.median(walls):.0f} s, {max(walls):.0f} s | {total:.0f} s | "
        f"{'; '.join(sorted(set(failures))) or 'none'} |"])


def pool_config(data: Path, folder: Path, seed: int) -> dict:
    """The train-manual deployment's config for one run: this data, its own split seed, a cache
    in `folder`."""
    from mlpipe.core.config import load_config

    config = load_config(ROOT / "conf" / "churn.yaml", [*SETTINGS, f"split.seed={seed}"], str(data))
    config = config.model_dump(mode="json")
    config["cache"]["storage"] = str(folder / "cache")
    return config


def pool(runs: int, rows: int, backend: str, limit: int) -> str:
    """The table of `pool` (see the module docstring)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with tempfile.TemporaryDirectory(prefix="pool-") as name:
        folder = Path(name)
        data = dataset(folder, rows)
        with servers(folder, backend) as (prefect_api, tracking):
            env = {**os.environ, "PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": tracking,
                   "MLPIPE_HOME": str(folder / "worker")}
            env.pop("OMP_NUM_THREADS", None)
            prefect = str(BIN / "prefect")
            for args in (["work-pool", "create", "mlpipe-process", "--type", "process"],
                         ["work-pool", "set-concurrency-limit", "mlpipe-process", str(limit)],
                         ["--no-prompt", "deploy", "--name", "train-manual"]):
                subprocess.run([prefect, *args], env=env, cwd=ROOT, check=True, capture_output=True)
            worker = Console([sys.executable, "-m", "mlpipe.cli.worker", "--pool", "mlpipe-process"], env, ROOT)
            try:
                with temporary_settings({PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
                    deployment = client.read_deployment_by_name("train/train-manual")
                    began = time.monotonic()
                    for number in range(runs):
                        client.create_flow_run_from_deployment(
                            deployment.id, parameters={"config": pool_config(data, folder, number + 1)})
                    most, states = 0, {}
                    while time.monotonic() - began < 7200:
                        flow_runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                            name=DeploymentFilterName(any_=["train-manual"])))
                        states = {r.id: r for r in flow_runs}
                        most = max(most, sum(r.state.is_running() for r in flow_runs))
                        if all(r.state.is_final() for r in flow_runs):
                            break
                        time.sleep(1)
                    total = time.monotonic() - began
            finally:
                worker.kill()
            held = registry(tracking)
    done = [r for r in states.values() if r.state.is_completed()]
    failures = sorted({f"{r.state.name}: {r.state.message}" for r in states.values() if not r.state.is_completed()})
    walls = [r.total_run_time.total_seconds() for r in done]
    return "\n".join([
        "| backend | limit | completed | most running at once | versions | history entries | champion | "
        "locks left | MLflow runs left RUNNING | run time (median, max) | all together | failures |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---|",
        f"| {backend} | {limit} | {len(done)} of {runs} | {most} | {held['versions']} | {held['entries']} | "
        f"v{held['champion']} | {held['locks']} | {held['running']} | {statistics.median(walls) if walls else 0:.0f} s, "
        f"{max(walls, default=0):.0f} s | {total:.0f} s | {'; '.join(failures) or 'none'} |"])


def dataset(folder: Path, rows: int) -> Path:
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_churn", ROOT / "data" / "generate_churn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = folder / "churn.csv"
    module.generate_churn(rows=rows, seed=3).to_csv(path, index=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["threads", "load", "pool"])
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--limit", type=int, default=2, help="pool: the work pool's concurrency limit")
    options = parser.parse_args()
    if options.mode == "threads":
        print(threads(options.runs or 4, options.rows, options.backend))
    elif options.mode == "pool":
        print(pool(options.runs or 12, options.rows, options.backend, options.limit))
    else:
        print(load(options.runs or 12, options.rows, options.backend))


if __name__ == "__main__":
    main()
