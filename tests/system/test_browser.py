"""What people see in the UIs, in headless Chromium against real servers (`prefect server start`
with its UI, `mlflow server`): the train deployment's run form, a training run's graph and
artifacts (a run from the cache too), the leaderboard, and the MLflow model and version pages.
Screenshots go to $MLPIPE_SCREENSHOTS when set (else the test's temporary folder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlpipe.cli.local_server import free_port

from .test_deployments import Services

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL = "churn-classifier"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's `chromium`, installed with apt-get where it is missing (as root); else a skip."""
    if found := shutil.which("chromium"):
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("headless Chromium is missing and cannot be installed here (needs root and apt-get): "
                    "run `apt-get install -y chromium`")
    result = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], capture_output=True,
                            text=True, timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if result.returncode != 0 or not shutil.which("chromium"):
        pytest.skip(f"`apt-get install -y chromium` failed: {(result.stderr or result.stdout)[-400:]}")
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """A Prefect server with its UI and an MLflow server (SQLite, local artifacts)."""
    home = tmp_path_factory.mktemp("ui")
    services = Services(home)
    prefect_port, mlflow_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "PYTEST"))}
    env.update(PREFECT_HOME=str(home / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api", MLPIPE_HOME=str(home / "project"),
               MLFLOW_TRACKING_URI=f"http://127.0.0.1:{mlflow_port}", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               OMP_NUM_THREADS="1", PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    try:
        prefect = services.start("prefect", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                             "--port", str(prefect_port)], env)
        mlflow = services.start("mlflow", [str(BIN / "mlflow"), "server", "--backend-store-uri",
                                           f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination",
                                           str(home / "mlartifacts"), "--host", "127.0.0.1", "--port",
                                           str(mlflow_port), "--workers", "1"], env)
        services.wait_healthy(("prefect", prefect, f"http://127.0.0.1:{prefect_port}/api/health"),
                              ("mlflow", mlflow, f"http://127.0.0.1:{mlflow_port}/health"))
        yield {"env": env, "home": home, "prefect": f"http://127.0.0.1:{prefect_port}",
               "mlflow": f"http://127.0.0.1:{mlflow_port}"}
    finally:
        services.stop()


def run(servers, *args: str) -> str:
    result = subprocess.run([str(BIN / "mlpipe"), *args], env=servers["env"], cwd=ROOT, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture
def browser(chromium):
    """Playwright driving the Debian Chromium (no browser download): `show(url, until, shot)` opens
    `url`, waits for the text `until`, saves a screenshot and returns the page's text."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])  # software WebGL: the run graph
        page = browser.new_page(viewport={"width": 1400, "height": 1600})

        def show(url: str, until: str, shot: Path, tab: str | None = None) -> str:
            page.goto(url)
            if tab:
                page.get_by_text(tab, exact=True).first.click(timeout=60_000)
            page.get_by_text(until).first.wait_for(timeout=60_000)
            page.wait_for_timeout(3000)  # what loads after it (the flow-run graph's canvas)
            page.screenshot(path=str(shot))
            return page.inner_text("body")

        yield show
        browser.close()


def test_the_run_form_the_artifacts_and_the_registry_pages(browser, servers, small_churn_csv, tmp_path):
    from mlflow import MlflowClient
    from prefect.client.orchestration import SyncPrefectClient

    shots = Path(os.environ.get("MLPIPE_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    run(servers, "deploy")
    auto = ["--data", str(small_churn_csv), "--set", "model.family=auto", "--set",
            "model.candidates=[logistic_regression, random_forest]", "--set",
            "model.params.random_forest={n_estimators: 30}", "--set", "evaluation.cv_folds=3", "--set",
            "evaluation.permutation_repeats=2"]
    summary = run(servers, "train", *auto)
    assert f"{servers['mlflow']}/#/models/{MODEL}/versions/1" in summary  # the hint names the server's page
    run(servers, "train", *auto)  # identical: every cached step from the cache

    with SyncPrefectClient(servers["env"]["PREFECT_API_URL"]) as client:
        form = client.read_deployment_by_name("train/train-manual")
        ours = [r for r in client.read_flow_runs() if r.deployment_id is None]  # not the scheduled ones
        first, cached = sorted(ours, key=lambda r: r.start_time)
        artifacts = client.read_artifacts()
    boards = [a for a in artifacts if a.key == "model-leaderboard"]
    (decision,) = [a for a in artifacts if a.key == "promotion-decision" and a.flow_run_id == first.id]
    assert {a.flow_run_id for a in boards} == {first.id, cached.id}

    prefect, mlflow = servers["prefect"], servers["mlflow"]
    text = browser(f"{prefect}/deployments/deployment/{form.id}/run", "Time Column", shots / "1-run-form.png")
    assert "Threads Per Worker" in text and "Candidates" in text and "Spaces" in text
    assert 'Property is type "None"' not in text
    assert "overwrite its stored result" in text and '{"random_forest": {"n_estimators": 200' in text

    browser(f"{prefect}/runs/flow-run/{first.id}", first.name, shots / "2-flow-run-graph.png")  # a canvas
    text = browser(f"{prefect}/runs/flow-run/{cached.id}", "model-leaderboard", shots / "3-cached-run-artifacts.png",
                   tab="Artifacts")
    assert "promotion-decision" in text and "holdout-metrics" in text
    board = next(a for a in boards if a.flow_run_id == cached.id)
    text = browser(f"{prefect}/artifacts/artifact/{board.id}", "logistic_regression", shots / "4-leaderboard.png")
    assert "random_forest" in text and "roc_auc_mean" in text  # the leaderboard table
    text = browser(f"{prefect}/artifacts/artifact/{decision.id}", "v1 is the new champion",
                   shots / "5-promotion-decision.png")
    assert "candidate roc_auc" in text

    tags = MlflowClient(servers["mlflow"]).get_model_version(MODEL, "1").tags
    assert len(tags) <= 10, json.dumps(tags)
    browser(f"{mlflow}/#/models/{MODEL}", "Binary classifier that predicts the probability that churn is Yes",
            shots / "6-mlflow-model.png")
    text = browser(f"{mlflow}/#/models/{MODEL}/versions/1", f"{MODEL} v1 predicts the probability that churn is Yes",
                   shots / "7-mlflow-version.png")  # the model card's opening sentence
    assert "| decision |" not in text and "comparison set" in text  # its table, rendered
