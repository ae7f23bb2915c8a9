"""Transient faults are ridden out by retries; a permanent outage fails naming the endpoint.

A small TCP proxy stands between the pipeline and a real server (moto's S3, `mlflow server`):
from the first connection it sees, it drops connections for `outage_s` seconds (forever with
None), then forwards bytes both ways."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from mlflow import MlflowClient

from mlpipe.core.retry_policies import first_retry_delay_s
from mlpipe.flows.training import train

pytestmark = pytest.mark.usefixtures("prefect_server")
# The pipeline's three retries wait about 1, 2 and 4 first delays (MLPIPE_RETRY_BACKOFF_S: 2 s
# by default, 0.5 s in the suite; Prefect's jitter makes each 0.63-1.5 times that, so at least
# 4.4 first delays in all). The transient outages last 2 (S3) and 3 (MLflow) first delays: longer
# than the first retry's wait, shorter than the three together.
DELAY = first_retry_delay_s()


class FlakyProxy:
    def __init__(self, upstream_port: int, outage_s: float | None):
        self.upstream_port, self.outage_s = upstream_port, outage_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.first_seen: float | None = None
        self.dropped = 0
        self.closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _down(self) -> bool:
        now = time.monotonic()
        self.first_seen = self.first_seen or now
        return self.outage_s is None or now - self.first_seen < self.outage_s

    def _serve(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._down():
                self.dropped += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()  # RST: the client sees a reset connection
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@pytest.fixture
def moto(small_churn_csv, s3_endpoint, s3_bucket, monkeypatch) -> int:
    """The port of moto's S3 server, with the sample as s3://flaky/churn.csv (the proxy stands in
    front of it, so AWS_ENDPOINT_URL_S3 is left to the test)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s3_bucket("flaky", {"churn.csv": small_churn_csv})
    return int(s3_endpoint.rsplit(":", 1)[1])


def test_s3_that_fails_its_first_requests_is_ridden_out(workspace, fast_config, moto, monkeypatch):
    proxy = FlakyProxy(moto, outage_s=2 * DELAY)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{proxy.port}")
    try:
        state = train(config=fast_config(data="s3://flaky/churn.csv"), return_state=True)
    finally:
        proxy.close()
    assert state.is_completed(), state.result(raise_on_failure=False)
    assert proxy.dropped >= 2


def test_s3_permanently_down_fails_naming_the_endpoint(workspace, fast_config, moto, monkeypatch):
    proxy = FlakyProxy(moto, outage_s=None)
    endpoint = f"http://127.0.0.1:{proxy.port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries on top of the task's: not under test
    try:
        state = train(config=fast_config(data="s3://flaky/churn.csv"), return_state=True)
    finally:
        proxy.close()
    assert state.is_failed()
    assert endpoint in str(state.result(raise_on_failure=False))
    assert MlflowClient().search_registered_models() == []


@pytest.fixture
def mlflow_server(start_mlflow_server) -> int:
    """The port of a one-worker `mlflow server` (the proxy stands in front of it)."""
    return int(start_mlflow_server(workers=1).rsplit(":", 1)[1])


@pytest.mark.slow  # over 10 s
def test_mlflow_server_down_for_seconds_is_ridden_out(workspace, fast_config, mlflow_server, monkeypatch):
    import mlflow

    proxy = FlakyProxy(mlflow_server, outage_s=3 * DELAY)
    uri = f"http://127.0.0.1:{proxy.port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # fail fast: the task's own retries must cope
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    mlflow.set_tracking_uri(uri)
    try:
        summary = train(config=fast_config())
    finally:
        proxy.close()
    assert proxy.dropped >= 1
    assert summary.decision.alias == "champion"
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{mlflow_server}")
    assert str(client.get_model_version_by_alias("churn-classifier", "champion").version) == summary.version


def test_mlflow_server_permanently_down_fails_naming_it(workspace, fast_config, monkeypatch):
    import mlflow

    from mlpipe.cli.local_server import free_port

    proxy = FlakyProxy(free_port(), outage_s=None)  # resets every connection: no server behind it
    uri = f"http://127.0.0.1:{proxy.port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    mlflow.set_tracking_uri(uri)
    try:
        state = train(config=fast_config(), return_state=True)
    finally:
        proxy.close()
    assert state.is_failed()
    assert f"127.0.0.1:{proxy.port}" in str(state.result(raise_on_failure=False))
