"""The production backends on a real PostgreSQL (tests/postgres.py, started by the tests): the
Prefect server (PREFECT_API_DATABASE_CONNECTION_URL, asyncpg), the MLflow tracking server
(--backend-store-uri postgresql://, psycopg 3) and Optuna's RDB storage. On them: four `mlpipe
train` at once (the promotion race), `mlpipe tune` with two workers, and the new-data sensor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlpipe.cli.local_server import free_port, wait_healthy
from tests.processes import stop_group

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL = "churn-classifier"
pytestmark = pytest.mark.slow


@pytest.fixture
def prefect_on_postgres(postgres, tmp_path):
    """`prefect server start` on its own PostgreSQL database; yields its API URL."""
    database = postgres.create_database(f"prefect_{tmp_path.name.lower()[-40:]}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_API_DATABASE_CONNECTION_URL=database.replace("postgresql://", "postgresql+asyncpg://"),
               PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_UI_ENABLED="false",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with open(tmp_path / "prefect-server.log", "w") as log:
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/api/health", server, timeout=240)
        yield f"http://127.0.0.1:{port}/api", database
    finally:
        stop_group(server, timeout=30)


def command_env(home: Path, prefect_api: str, tracking: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(MLPIPE_HOME=str(home), PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=tracking, OMP_NUM_THREADS="1")
    return env


def count_rows(database: str, query: str) -> int:
    import psycopg

    connection = psycopg.connect(database)
    try:
        with connection.cursor() as cursor:
            cursor.execute(query)
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def test_train_race_tune_and_sensor_on_postgresql(postgres, prefect_on_postgres, start_mlflow_server, tmp_path,
                                                  small_churn_csv):
    prefect_api, prefect_database = prefect_on_postgres
    mlflow_database = postgres.create_database(f"mlflow_{tmp_path.name.lower()[-40:]}")
    tracking = start_mlflow_server(workers=2, backend_store_uri=mlflow_database)
    train = [str(BIN / "mlpipe"), "train", "--config", str(ROOT / "conf" / "churn.yaml"), "--data",
             str(small_churn_csv), "--set", "evaluation.cv_folds=2", "--set", "evaluation.permutation_repeats=1",
             "--set", "promotion.tolerance=0", "--set", "promotion.min_value=0.5",
             "--set", "model.family=hist_gradient_boosting"]
    runs = {iters: subprocess.Popen([*train, "--set", f"model.params.hist_gradient_boosting.max_iter={iters}"],
                                    env=command_env(tmp_path / f"i{iters}", prefect_api, tracking),
                                    cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for iters in (5, 15, 60, 200)}
    for iters, process in runs.items():
        out, err = process.communicate(timeout=900)
        assert process.returncode == 0, f"max_iter={iters}\n{out[-2000:]}\n{err[-3000:]}"
        assert "could not settle" not in err, err  # the sweep of killed processes' runs works on these servers

    client = MlflowClient(tracking_uri=tracking)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == 4
    scores = {str(v.version): client.get_run(v.run_id).data.metrics["roc_auc"] for v in versions}
    champion = str(client.get_model_version_by_alias(MODEL, "champion").version)
    assert scores[champion] == max(scores.values())
    history = client.search_runs([client.get_experiment_by_name(MODEL + "-promotions").experiment_id])
    assert sorted(run.data.tags["mlpipe.version"] for run in history) == sorted(scores)
    assert client.search_registered_models(f"name = '{MODEL}.promotion-lock'") == []

    optuna_storage = postgres.create_database(f"optuna_{tmp_path.name.lower()[-40:]}")
    tuned = subprocess.run([str(BIN / "mlpipe"), "tune", "--config", str(ROOT / "conf" / "churn.yaml"), "--data",
                            str(small_churn_csv), "--trials", "4", "--workers", "2",
                            "--set", "model.family=hist_gradient_boosting", "--set", "evaluation.cv_folds=2",
                            "--set", f"tuning.storage={optuna_storage}"],
                           env=command_env(tmp_path / "tune", prefect_api, tracking), cwd=tmp_path,
                           capture_output=True, text=True, timeout=900)
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert count_rows(optuna_storage, "SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')") >= 4

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "a.csv").write_bytes(small_churn_csv.read_bytes())
    sensor = ("import sys; from mlpipe.flows.sensors import new_data_sensor; "
              f"print(new_data_sensor(prefix={str(incoming) + '/'!r}))")
    env = command_env(tmp_path / "sensor", prefect_api, tracking)
    first = subprocess.run([sys.executable, "-c", sensor], env=env, capture_output=True, text=True, timeout=300)
    again = subprocess.run([sys.executable, "-c", sensor], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and first.stdout.strip().endswith(f"[{str(incoming / 'a.csv')!r}]"), first.stderr
    assert again.returncode == 0 and again.stdout.strip().endswith("[]"), again.stderr  # its memory: on PostgreSQL

    completed = count_rows(prefect_database, "SELECT count(*) FROM flow_run WHERE state_type = 'COMPLETED'")
    assert completed >= 7  # 4 trains, 1 tune, 2 sensor runs: stored in PostgreSQL
    assert count_rows(prefect_database, "SELECT count(*) FROM flow_run WHERE state_type = 'RUNNING'") == 0
