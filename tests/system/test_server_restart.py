"""The MLflow server killed while `mlpipe train` registers, and restarted 5 s later on the same
port and store: with the command's bounded retries (about 20 s of them), the run rides it out
and the registry holds the crash harness's invariants (benchmarks/crash_probe.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.crash_probe import MODEL, Console, check_invariants
from mlpipe.cli.local_server import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    with open(folder / "mlflow.log", "a") as log:
        server = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_healthy(f"http://127.0.0.1:{port}/health", server, timeout=180)
    return server


def test_a_tracking_server_killed_during_register_and_back_5_s_later_is_ridden_out(tmp_path, monkeypatch,
                                                                                  small_churn_csv):
    import prefect.settings

    port = free_port()
    server = mlflow_server(tmp_path, port)
    tracking = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "MLFLOW_HTTP_REQUEST"))}
    env.update(MLPIPE_HOME=str(tmp_path), MLFLOW_TRACKING_URI=tracking, OMP_NUM_THREADS="1",
               PREFECT_API_URL=prefect.settings.PREFECT_API_URL.value())
    run = Console([str(BIN / "mlpipe"), "train", "--config", str(ROOT / "conf" / "churn.yaml"), "--data",
                   str(small_churn_csv), "--set", "model.family=hist_gradient_boosting", "--set",
                   "evaluation.cv_folds=2", "--set", "evaluation.permutation_repeats=1"], env, tmp_path)
    try:
        deadline = time.monotonic() + 600
        while run.finished_at("evaluate") is None:  # register starts now: it logs the model next
            assert run.process.poll() is None and time.monotonic() < deadline, run.text()[-3000:]
            time.sleep(0.01)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        time.sleep(5)
        server = mlflow_server(tmp_path, port)
        assert run.wait(timeout=600) == 0, run.text()[-4000:]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        if run.process.poll() is None:
            run.kill()
    assert "Retrying (" not in run.text()  # urllib3's retry warnings came out as "waiting for ..." lines
    server = mlflow_server(tmp_path, port)
    try:
        import mlflow
        import pandas as pd

        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
        mlflow.set_tracking_uri(tracking)
        raw_rows = pd.read_csv(small_churn_csv).drop(columns=["churn"]).head(20)
        assert check_invariants(MODEL, raw_rows) == []
    finally:
        mlflow.set_tracking_uri(None)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
