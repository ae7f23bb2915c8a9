"""The deployments end to end with real servers, driven through the real CLIs:
`prefect server start`, moto's S3 server, `mlflow server` (SQLite, artifacts proxied to S3),
`mlpipe deploy`, a process worker, `prefect deployment run`."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pandas as pd
import pytest

from mlpipe.cli.local_server import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


class Services:
    """Started processes, stopped (whole process groups) at teardown, also when a test fails."""

    def __init__(self, home: Path):
        self.home = home
        self.processes: list[tuple[subprocess.Popen, int]] = []  # with the signal that stops each

    def start(self, name: str, args: list[str], env: dict, stop_signal: int = signal.SIGTERM) -> subprocess.Popen:
        log = open(self.home / f"{name}.log", "w")
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                   start_new_session=True)
        self.processes.append((process, stop_signal))
        return process

    def wait_healthy(self, *started: tuple[str, subprocess.Popen, str]) -> None:
        """Until each (name, process, health URL) answers; they start side by side meanwhile."""
        for name, process, health in started:
            try:
                wait_healthy(health, process, timeout=120)
            except RuntimeError:
                raise RuntimeError(f"{name} did not start:\n{(self.home / f'{name}.log').read_text()[-3000:]}")

    def stop(self) -> None:
        for process, stop_signal in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, stop_signal)
        for process, _ in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("stack")
    services = Services(home)
    s3_port, prefect_port, mlflow_port = free_port(), free_port(), free_port()
    s3 = f"http://127.0.0.1:{s3_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "PYTEST"))}
    env.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=s3, MLFLOW_S3_ENDPOINT_URL=s3,
        PREFECT_HOME=str(home / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api",
        PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="5",
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{mlflow_port}", MLPIPE_HOME=str(home / "project"),
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # as `make mlflow-server` (tests/conftest.py)
        PATH=f"{BIN}:{os.environ.get('PATH', '')}",
    )
    try:
        s3_server = services.start("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], env)
        prefect_server = services.start("prefect", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                                    "--port", str(prefect_port)], env)
        services.wait_healthy(("s3", s3_server, f"{s3}/moto-api/"))
        client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing")
        for bucket in ("data", "mlflow-artifacts"):
            client.create_bucket(Bucket=bucket)
        mlflow_server = services.start("mlflow", [str(BIN / "mlflow"), "server", "--backend-store-uri",
                                                  f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination",
                                                  "s3://mlflow-artifacts", "--host", "127.0.0.1", "--port",
                                                  str(mlflow_port), "--workers", "1"], env)
        services.wait_healthy(("prefect", prefect_server, f"http://127.0.0.1:{prefect_port}/api/health"),
                              ("mlflow", mlflow_server, f"http://127.0.0.1:{mlflow_port}/health"))
        yield {"env": env, "s3": client, "services": services, "home": home}
    finally:
        services.stop()


def cli(stack, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), env=stack["env"], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def prefect_client(stack):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(stack["env"]["PREFECT_API_URL"])


def mlflow_client(stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack["env"]["MLFLOW_TRACKING_URI"])


def upload(stack, frame: pd.DataFrame, key: str) -> str:
    buffer = io.BytesIO()
    frame.to_csv(buffer, index=False)
    stack["s3"].put_object(Bucket="data", Key=key, Body=buffer.getvalue())
    return f"s3://data/{key}"


def flow_runs(stack, deployment: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with prefect_client(stack) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])))


def wait_for_runs(stack, deployment: str, count: int, timeout: float = 300) -> list:
    """Runs of `deployment` once `count` of them are final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = flow_runs(stack, deployment)
        if sum(r.state.is_final() for r in runs) >= count:
            return runs
        time.sleep(2)
    raise AssertionError(f"{deployment}: {[(r.name, r.state.name) for r in flow_runs(stack, deployment)]}")


def flow_run_id(run: subprocess.CompletedProcess) -> str:
    """The flow run a `prefect deployment run` made."""
    return re.search(r"UUID: ([0-9a-f-]{36})", run.stdout).group(1)


def events(stack, name: str) -> list:
    from prefect.events.filters import EventFilter, EventNameFilter

    with prefect_client(stack) as client:
        return client.read_events(EventFilter(event=EventNameFilter(name=[name])), limit=50).events


def trained_on(stack, flow_run) -> tuple[str, str]:
    """(dataset URI, superseded objects) recorded on the model version a flow run registered."""
    (version,) = mlflow_client(stack).search_model_versions(
        f"name = 'churn-classifier' and tags.`mlpipe.prefect_flow_run_id` = '{flow_run.id}'")
    return version.tags["mlpipe.dataset_uri"], version.tags.get("mlpipe.dataset_superseded", "")


def fast_config(uri: str) -> dict:
    from mlpipe.core.config import load_config

    return load_config(ROOT / "conf" / "churn.yaml", ["evaluation.cv_folds=3", "evaluation.permutation_repeats=2",
                                                      "model.family=hist_gradient_boosting"],
                       uri).model_dump(mode="json")


def test_deployments_end_to_end(stack, generate_churn, flow_logs):
    prefect = str(BIN / "prefect")

    # 1. deploy: pool + six deployments with their schedules and triggers
    cli(stack, str(BIN / "mlpipe"), "deploy")
    with prefect_client(stack) as client:
        weekly = client.read_deployment_by_name("train/retrain-weekly")
        assert weekly.schedules[0].schedule.cron == "0 3 * * 1" and weekly.schedules[0].schedule.timezone == "UTC"
        sensor = client.read_deployment_by_name("new-data-sensor/new-data-sensor")
        assert sensor.schedules[0].schedule.interval.total_seconds() == 300
        for name in ("train/train-manual", "train/retrain-on-new-data", "score/batch-score",
                     "drift-monitor/drift-monitor"):
            assert client.read_deployment_by_name(name).work_pool_name == "mlpipe-process"
        automations = [a for a in client.read_automations() if "retrain-on-new-data" in a.name]
        assert sorted(sorted(a.trigger.expect) for a in automations) == [["mlpipe.dataset.arrived"],
                                                                         ["mlpipe.drift.detected"]]
    # Prefect 3.9's process worker outlives SIGTERM and SIGINT by more than 15 s (seen here), and runs
    # no flow by the end: it is killed.
    stack["services"].start("worker", [prefect, "worker", "start", "--pool", "mlpipe-process"], stack["env"],
                            stop_signal=signal.SIGKILL)

    # 2. a manual training run through the worker: champion on the MLflow server, artifacts in S3
    reference = upload(stack, generate_churn(rows=1500, seed=21), "train/churn.csv")
    cli(stack, prefect, "deployment", "run", "train/train-manual", "--params",
        json.dumps({"config": fast_config(reference)}), "--watch")
    (manual,) = wait_for_runs(stack, "train-manual", 1)
    assert manual.state.is_completed(), manual.state
    champion = mlflow_client(stack).get_model_version_by_alias("churn-classifier", "champion")
    assert stack["s3"].list_objects_v2(Bucket="mlflow-artifacts").get("KeyCount", 0) > 0

    # 3. new data: sensor -> one event -> one triggered retrain with that URI; again: nothing
    arrived = upload(stack, generate_churn(rows=1500, seed=22), "incoming/batch-1.csv")
    cli(stack, prefect, "deployment", "run", "new-data-sensor/new-data-sensor", "--param",
        "prefix=s3://data/incoming/", "--watch")
    (retrain,) = wait_for_runs(stack, "retrain-on-new-data", 1)
    assert retrain.state.is_completed(), retrain.state
    assert retrain.parameters["config"]["data"]["uri"] == "s3://data/incoming/"  # the prefix: its newest object
    assert trained_on(stack, retrain) == (arrived, "none")
    assert [e.resource.id for e in events(stack, "mlpipe.dataset.arrived")] == [arrived]
    again = cli(stack, prefect, "deployment", "run", "new-data-sensor/new-data-sensor", "--param",
                "prefix=s3://data/incoming/", "--watch")
    # its log says it found nothing new, so it emitted nothing and nothing can have been triggered
    logs = flow_logs(flow_run_id(again), lambda messages: any(m.startswith("Finished in state") for m in messages),
                     timeout=60, client=prefect_client(stack))  # the flow's last line: logs come after the state
    assert "0 new object(s) under s3://data/incoming/ (1 seen before)" in "\n".join(logs)
    assert len(events(stack, "mlpipe.dataset.arrived")) == 1
    assert len(flow_runs(stack, "retrain-on-new-data")) == 1

    # a burst of uploads under another prefix: three events, one retrain (debounced), which trains
    # on the newest of the three and names the two it supersedes
    burst = [upload(stack, generate_churn(rows=1500, seed=30 + i), f"burst/part-{i}.csv") for i in range(3)]
    cli(stack, prefect, "deployment", "run", "new-data-sensor/new-data-sensor", "--param",
        "prefix=s3://data/burst/", "--watch")
    runs = wait_for_runs(stack, "retrain-on-new-data", 2)
    time.sleep(8)
    assert len(events(stack, "mlpipe.dataset.arrived")) == 4
    runs = flow_runs(stack, "retrain-on-new-data")
    assert len(runs) == 2
    (burst_run,) = [r for r in runs if r.parameters["config"]["data"]["uri"] == "s3://data/burst/"]
    assert burst_run.state.is_completed(), burst_run.state
    assert trained_on(stack, burst_run) == (burst[2], "part-1.csv, part-0.csv")

    # 4. batch scoring with the champion
    champion = mlflow_client(stack).get_model_version_by_alias("churn-classifier", "champion")
    cli(stack, prefect, "deployment", "run", "score/batch-score", "--param", f"data_uri={reference}",
        "--param", "output_uri=s3://data/scores/churn.parquet", "--watch")
    scored = pd.read_parquet(io.BytesIO(stack["s3"].get_object(Bucket="data", Key="scores/churn.parquet")["Body"].read()))
    assert len(scored) == 1500
    assert set(scored["model_version"].astype(str)) == {str(champion.version)}

    # 5. drift: an undrifted sample emits nothing; a drifted one emits and starts a retrain
    steady = upload(stack, generate_churn(rows=1500, seed=23), "monitor/steady.csv")
    cli(stack, prefect, "deployment", "run", "drift-monitor/drift-monitor", "--param", f"data_uri={steady}", "--watch")
    (steady_run,) = [r for r in flow_runs(stack, "drift-monitor") if r.parameters["data_uri"] == steady]
    assert steady_run.state.is_completed(), steady_run.state
    drifted_frame = generate_churn(rows=1500, seed=24)
    drifted_frame["tenure"] = drifted_frame["tenure"] // 3
    drifted_frame["monthly_charges"] = drifted_frame["monthly_charges"] + 40
    drifted_frame["contract"] = "Month-to-month"
    drifted = upload(stack, drifted_frame, "monitor/drifted.csv")
    cli(stack, prefect, "deployment", "run", "drift-monitor/drift-monitor", "--param", f"data_uri={drifted}", "--watch")
    runs = wait_for_runs(stack, "retrain-on-new-data", 3)
    uris = [r.parameters["config"]["data"]["uri"] for r in runs]
    assert len(runs) == 3 and "s3://data/incoming/" in uris and drifted in uris and steady not in uris
    assert [e.resource.id for e in events(stack, "mlpipe.drift.detected")] == [drifted]
