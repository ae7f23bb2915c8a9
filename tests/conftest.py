"""Shared fixtures: one Prefect test server per session, an MLflow SQLite store per test."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)  # tests never talk to a developer's own server
# `mlpipe` commands the tests run share one local Prefect server, which exits 2 minutes after the
# last of them rather than the default 10: nothing the suite starts outlives it for long.
os.environ.setdefault("MLPIPE_SERVER_IDLE_S", "120")
# Transient-fault retries wait 0.5/1/2 s rather than 2/4/8 s (read when the tasks are defined, so
# set before anything imports them): the fault tests scale their outages to it (test_faults.py).
os.environ.setdefault("MLPIPE_RETRY_BACKOFF_S", "0.5")
# `mlflow server` starts seven job-runner processes beside its workers, each importing MLflow (2 s
# of CPU apiece, beside the other test worker), for GenAI jobs nothing here submits: off in the
# servers the tests start, as in `make mlflow-server`.
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # The workers share the cores: each fits with one OpenMP/BLAS thread (and so do the commands
    # it starts). HistGradientBoosting's OpenMP threads spin while they wait for a busy core:
    # two 5 s tests took two minutes each beside another worker.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

import pytest

ROOT = Path(__file__).resolve().parent.parent


# Minutes-long end-to-end tests, longest first (seconds on 2 cores); other system tests count 20 s.
LONG_TESTS = {"test_crash_random.py": 480, "test_postgres.py": 240, "test_deployments.py": 180, "test_browser.py": 120,
              "test_readme.py": 115, "test_retraining_year.py": 75, "test_server_restart.py": 60,
              "test_promotion.py": 55}


def pytest_collection_modifyitems(config, items):
    """With several xdist workers (worksteal), each starts on one contiguous share of this
    order and later steals from the others' ends. Left in file order, the system tests (tests/
    system, minutes each) all fall into the last share and run one after another at the end;
    dealt out instead, longest first, to the front of each share (the least loaded share next),
    they start at once and the short tests fill in around them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    system = [item for item in items if item.path.parent.name == "system"]
    rest = [item for item in items if item.path.parent.name != "system"]
    system.sort(key=lambda item: -LONG_TESTS.get(item.path.name, 20))
    shares: list[list] = [[] for _ in range(workers)]
    load = [0] * workers
    for item in system:
        k = load.index(min(load))
        shares[k].append(item)
        load[k] += LONG_TESTS.get(item.path.name, 20)
    ordered, remaining = [], len(items)
    for k in range(workers):  # xdist's split: `remaining // workers left` tests to each in turn
        size = remaining // (workers - k)
        take = max(size - len(shares[k]), 0)
        ordered += shares[k] + rest[:take]
        rest = rest[take:]
        remaining -= len(shares[k]) + take
    items[:] = ordered + rest


def _generator(name: str = "generate_churn"):
    spec = importlib.util.spec_from_file_location("generate_churn", ROOT / "data" / "generate_churn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.fixture(scope="session")
def generate_churn():
    """The sample generator (data/generate_churn.py) as a function."""
    return _generator()


@pytest.fixture(scope="session")
def small_churn_csv(tmp_path_factory, generate_churn) -> Path:
    """1,500 churn-like rows: enough signal for roc_auc > 0.8, small enough for seconds-long runs."""
    path = tmp_path_factory.mktemp("data") / "churn_small.csv"
    generate_churn(rows=1500, seed=11).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def dirty_churn_csv(tmp_path_factory) -> Path:
    """The same 1,500 rows as `small_churn_csv` as people export them: semicolon-delimited, ints
    with gaps, numbers stored as text with blanks, a True/False column with gaps."""
    path = tmp_path_factory.mktemp("data") / "churn_dirty.csv"
    return _generator("write_dirty_export")(path, rows=1500, seed=11)


@pytest.fixture
def python_without():
    """Run Python code in a fresh interpreter (at the repository root) where importing any of the
    `blocked` top-level packages raises ImportError, as on a machine without them."""

    def run(code: str, blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
        blocker = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
                   f"        if name.split('.')[0] in {tuple(blocked)!r}:\n"
                   "            raise ImportError(f'{name} is blocked in this test')\n"
                   "sys.meta_path.insert(0, Block())\n")
        return subprocess.run([sys.executable, "-c", blocker + code], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)

    return run


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect API server (subprocess, temporary SQLite database) for the whole session.
    Flows the tests run in this process send no heartbeats: the end of every flow run waited for
    Prefect's heartbeat thread, which sleeps in 1 s steps (0.6 s a run on average, in a suite that
    runs hundreds), and no test here reads them. Flow runs through the deployments' worker keep
    theirs (tests/system/test_deployments.py)."""
    from prefect.testing.utilities import prefect_test_harness

    from mlpipe.cli.main import _without_heartbeats  # what the commands do on the server mlpipe starts

    with prefect_test_harness(server_startup_timeout=180):
        with _without_heartbeats():
            yield


@pytest.fixture(scope="session")
def new_mlflow_store(tmp_path_factory):
    """`new_mlflow_store(path)`: a new, empty MLflow SQLite store at `path`; returns its URI.
    MLflow makes the tables of a new store by running its schema migrations, 1.5-1.7 s here, which
    every test with a `workspace` (81) paid. They run once per test worker instead, in a template
    that each store is then a copy of: to MLflow, a new store (the same tables at the same schema
    version, holding only the Default experiment, whose artifact folder is set to the one a store
    made at `path` gets: `mlruns/0` beside it, the folder the tests run in)."""
    import shutil
    import sqlite3

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = tmp_path_factory.mktemp("empty-mlflow-store")
    template = folder / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{template}", str(folder / "mlruns")).engine.dispose()

    def new(path: Path) -> str:
        shutil.copyfile(template, path)
        now = int(time.time() * 1000)
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
                       "WHERE experiment_id = 0", (str(path.parent.resolve() / "mlruns" / "0"), now, now))
        return f"sqlite:///{path}"

    return new


@pytest.fixture
def workspace(tmp_path, monkeypatch, new_mlflow_store) -> Path:
    """A fresh project home: MLflow SQLite store, artifacts and task cache all under tmp_path."""
    monkeypatch.setenv("MLPIPE_HOME", str(tmp_path))
    uri = new_mlflow_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    import mlflow

    mlflow.set_tracking_uri(uri)  # MLflow also keeps a process-wide URI: never leak the last test's
    yield tmp_path
    mlflow.set_tracking_uri(None)


@pytest.fixture
def fast_config(small_churn_csv):
    """conf/churn.yaml on the small sample with cheaper evaluation, plus any overrides. The
    family is fixed (the tests were written for it, and `auto` cross-validates every family:
    seconds per run); the tests of `auto` set `model.family=auto`."""
    from mlpipe.core.config import load_config

    def make(*overrides: str, data: Path | str | None = None):
        return load_config(
            ROOT / "conf" / "churn.yaml",
            ["evaluation.cv_folds=3", "evaluation.permutation_repeats=2", "model.family=hist_gradient_boosting",
             "model.params.hist_gradient_boosting.max_iter=80", *overrides],
            str(data or small_churn_csv),
        )

    return make


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server (a real HTTP endpoint, which s3fs needs: in-process mocks can't reach it)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint):
    """`s3_bucket(name, {key: local file})` creates a bucket on moto's S3 server with those
    objects and returns a boto3 client; every bucket it made is emptied and removed afterwards."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    made = []

    def create(name: str, files: dict[str, Path] | None = None):
        s3.create_bucket(Bucket=name)
        made.append(name)
        for key, path in (files or {}).items():
            s3.upload_file(str(path), name, key)
        return s3

    yield create
    for name in made:
        for item in s3.list_objects_v2(Bucket=name).get("Contents", []):
            s3.delete_object(Bucket=name, Key=item["Key"])
        s3.delete_bucket(Bucket=name)


@pytest.fixture
def s3_env(s3_endpoint, s3_bucket, monkeypatch):
    """AWS environment pointing at moto, and an empty bucket `bucket` (removed afterwards)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    return s3_bucket("bucket")


@pytest.fixture
def start_mlflow_server(tmp_path):
    """`start_mlflow_server(workers)` runs `mlflow server` (SQLite store, or `backend_store_uri`,
    and artifacts under tmp_path) until the test ends, and returns its URL once it answers /health."""
    import signal

    from mlpipe.cli.local_server import free_port, wait_healthy

    started = []

    def start(workers: int = 1, backend_store_uri: str | None = None) -> str:
        port = free_port()
        log = open(tmp_path / "mlflow.log", "w")
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
             backend_store_uri or f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination",
             str(tmp_path / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)
        wait_healthy(f"http://127.0.0.1:{port}/health", process, timeout=120)
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/postgres.py): the machine's own binaries,
    started in a temporary folder on a free port; `postgres.create_database(name)` returns a URL.
    Skips, saying why, where no PostgreSQL server binaries are installed."""
    from mlpipe.cli.local_server import free_port
    from tests.postgres import Postgres, find_binaries

    binaries = find_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): install PostgreSQL (e.g. apt-get install "
                    "postgresql) or set PG_BIN to run the PostgreSQL-backed tests")
    server = Postgres(binaries, free_port()).start()
    yield server
    server.stop()


def _read_until(read, done, timeout: float, every: float):
    """`read()` again every `every` seconds until `done(result)` holds or `timeout` passes; the
    last result. What the API shows of a finished run can lag behind it (states and logs arrive
    from background workers)."""
    deadline = time.monotonic() + timeout
    while True:
        result = read()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(every)


@pytest.fixture
def task_states():
    """`task_states(flow_run_id, *expected)`: task name (without its run suffix) -> state name,
    for one finished flow run. Task runs report their states to the API as events, which the
    server may not have stored yet when the flow returns, some runs later than others: read again
    until every `expected` task is there and every run is final (30 s at most)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    def name(run) -> str:
        return run.name.rsplit("-", 1)[0]

    def states(flow_run_id, *expected: str, timeout: float = 30.0) -> dict[str, str]:
        def complete(runs) -> bool:
            return (bool(runs) and set(expected) <= {name(run) for run in runs}
                    and all(run.state is not None and run.state.is_final() for run in runs))

        with get_client(sync_client=True) as client:
            runs = _read_until(
                lambda: client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))),
                complete, timeout, every=0.2)
        return {name(run): run.state.name if run.state else "(no state)" for run in runs}

    return states


@pytest.fixture
def flow_logs():
    """`flow_logs(flow_run_id, until)`: the log messages of one flow run, read again until
    `until(messages)` holds or 30 s pass (logs reach the API from a background worker). From the
    session's server, or through `client=` (a sync Prefect client, not yet entered) another's."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    def read(flow_run_id, until=lambda messages: True, timeout: float = 30.0, client=None) -> list[str]:
        with client or get_client(sync_client=True) as client:
            return _read_until(lambda: [log.message for log in client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))], until, timeout, every=0.5)

    return read


@pytest.fixture
def ray_cluster():
    """A real single-node Ray cluster (`ray start --head --block` on 127.0.0.1, 2 CPUs, no
    dashboard); yields its address for RAY_ADDRESS once it has started, and stops it at
    teardown, also when the test failed. The cluster's processes share one process group,
    which teardown ends: `ray stop` would stop every Ray on the machine, another test
    worker's too."""
    import shutil
    import socket
    import tempfile

    from tests.processes import start_ray_node, stop_group

    scratch = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        process = start_ray_node(["--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
                                  "--temp-dir", scratch], scratch, Path(scratch) / "ray-start.log")
        try:
            yield f"127.0.0.1:{port}"
        finally:
            stop_group(process, timeout=5)  # then no more grace: the cluster's files go with `scratch`
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
