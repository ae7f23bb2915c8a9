"""Promotion under concurrency against a real `mlflow server`, the history, and rollback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL = "churn-classifier"
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture
def mlflow_server(start_mlflow_server) -> str:
    """A two-worker `mlflow server`: the concurrent runs below call it at once."""
    return start_mlflow_server(workers=2)


def train_cli(tmp_path: Path, name: str, tracking: str, data: Path, *overrides: str) -> subprocess.Popen:
    import prefect.settings

    home = tmp_path / name
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(MLFLOW_TRACKING_URI=tracking, MLPIPE_HOME=str(home),
               PREFECT_API_URL=prefect.settings.PREFECT_API_URL.value())
    args = [str(BIN / "mlpipe"), "train", "--config", str(ROOT / "conf" / "churn.yaml"), "--data", str(data),
            "--set", "evaluation.cv_folds=3", "--set", "evaluation.permutation_repeats=1",
            "--set", "promotion.tolerance=0", "--set", "promotion.min_value=0.5",
            "--set", "model.family=hist_gradient_boosting"]  # the variants differ in its max_iter
    for item in overrides:
        args += ["--set", item]
    return subprocess.Popen(args, env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_four_concurrent_runs_leave_the_best_as_champion_and_a_full_history(tmp_path, mlflow_server,
                                                                             small_churn_csv):
    variants = {"i5": "max_iter=5", "i15": "max_iter=15", "i60": "max_iter=60", "i200": "max_iter=200"}
    processes = {name: train_cli(tmp_path, name, mlflow_server, small_churn_csv,
                                 f"model.params.hist_gradient_boosting.{value}")
                 for name, value in variants.items()}
    for name, process in processes.items():
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, f"{name}\n{out[-2000:]}\n{err[-3000:]}"

    client = MlflowClient(tracking_uri=mlflow_server)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == 4
    scores = {str(v.version): client.get_run(v.run_id).data.metrics["roc_auc"] for v in versions}
    champion = str(client.get_model_version_by_alias(MODEL, "champion").version)
    assert scores[champion] == max(scores.values()), (champion, scores)

    from mlpipe.adapters.mlflow import aliases

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    try:
        history = aliases.promotion_history(MODEL)
        assert sorted(entry["version"] for entry in history) == sorted(scores)  # one entry per run, none lost
        promoted = [entry["version"] for entry in history if entry["action"] == "promote"]
        assert promoted[-1] == champion
        assert client.search_registered_models(f"name = '{MODEL}.promotion-lock'") == []  # lock released

        # rollback to the first champion, through the CLI, recorded in the history
        first = promoted[0]
        rolled = subprocess.run([str(BIN / "mlpipe"), "rollback", "--to", first, "--reason", "bad release"],
                                env={**os.environ}, capture_output=True, text=True, timeout=300)
        assert rolled.returncode == 0, rolled.stderr[-2000:]
        assert str(client.get_model_version_by_alias(MODEL, "champion").version) == first
        last = aliases.promotion_history(MODEL)[-1]
        assert (last["action"], last["version"], last["previous_champion"], last["reason"]) == (
            "rollback", first, champion, "bad release")
        missing = subprocess.run([str(BIN / "mlpipe"), "rollback", "--to", "99"], env={**os.environ},
                                 capture_output=True, text=True, timeout=300)
        assert missing.returncode == 1 and missing.stderr.strip().startswith("error: rollback of")
        assert str(client.get_model_version_by_alias(MODEL, "champion").version) == first
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
