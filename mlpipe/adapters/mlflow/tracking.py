"""MLflow tracking: where the store is, experiments, and runs with their params, metrics and
artifacts (runs that log no model, such as drift checks, and what the model runs share).

With no `MLFLOW_TRACKING_URI`, MLflow runs embedded: a SQLite file and an artifact folder
under `<project>/.mlpipe/` (git-ignored).
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlpipe.core.lineage import LINEAGE_KEY, TAG_PREFIX, redact_uri
from mlpipe.core.paths import project_home
from mlpipe.core.processes import owner_is_dead, owner_token

# The process that created a run (mlpipe.core.processes): a run left RUNNING by a process that is
# gone was cut short, and `mark_runs_of_dead_processes` ends it.
OWNER_TAG = TAG_PREFIX + "owner"
ORPHANED_TAG = TAG_PREFIX + "orphaned"


def owner_tags() -> dict[str, str]:
    """The tag naming this process as a new run's owner."""
    return {OWNER_TAG: owner_token()}


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, else a SQLite store under the project."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    state = project_home() / ".mlpipe"
    state.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{state / 'mlflow.db'}"


def _local_artifact_root(uri: str) -> str | None:
    """For a SQLite store, artifacts go in a folder beside the database (MLflow would otherwise
    write `./mlruns` wherever the process happens to run)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.parent / "mlartifacts").resolve().as_uri()


_OPENED: set[str] = set()  # tracking URIs this process has opened a store of


@contextlib.contextmanager
def _first_open(uri: str) -> Iterator[None]:
    """Python's cyclic garbage collector paused while this process first imports MLflow and
    opens the store at `uri` (for SQLite: SQLAlchemy, alembic, the schema check, a new
    store's migrations), then back as it was. They make hundreds of thousands of objects that
    live as long as the process, and each collection they trigger walks the run's heap again
    (pandas, scikit-learn, Prefect): opening a store the sample's train run made took 1.12-1.43 s
    (median 1.29) paused against 1.25-1.62 s (median 1.42) not, alternating, and a new store
    (migrations) 1.96-2.75 s against 2.20-3.64 s. Not frozen afterwards (`gc.freeze`): the
    run's frames and models must stay collectable."""
    if uri in _OPENED:
        yield
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        _OPENED.add(uri)
    finally:
        if was_enabled:
            gc.enable()


def client():
    """A client of the configured tracking store (made on each call: the URI may change)."""
    uri = tracking_uri()
    with _first_open(uri):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=uri)


def ensure_experiment(name: str) -> str:
    """The id of experiment `name`, created (artifacts beside a SQLite store) when missing."""
    uri = tracking_uri()
    with _first_open(uri):
        import mlflow

        mlflow.set_tracking_uri(uri)
        experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    root = _local_artifact_root(tracking_uri())
    location = f"{root}/{name}" if root else None
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except Exception:  # another run created it meanwhile
        return mlflow.get_experiment_by_name(name).experiment_id


def log_run(*, experiment: str, run_name: str, params: dict[str, str], metrics: dict[str, float],
            json_artifacts: dict[str, Any], tags: dict[str, str] | None = None) -> str:
    """One MLflow run with params, metrics, tags and `<name>.json` artifacts; returns its id."""
    import mlflow

    experiment_id = ensure_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags={**(tags or {}), **owner_tags()}) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        log_run_artifacts(json_artifacts)
    return run.info.run_id


def log_run_artifacts(json_artifacts: dict[str, Any], plots: dict[str, bytes] | None = None,
                      config_yaml: str | None = None, tables: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """Into the active run: `plots/<name>.png`, `config.yaml`, `<name>.json` artifacts, and
    tables (name -> rows) as MLflow table artifacts `<name>.json`."""
    import mlflow
    import pandas as pd

    if plots is not None:
        with tempfile.TemporaryDirectory() as folder:
            for name, png in plots.items():
                Path(folder, f"{name}.png").write_bytes(png)
            mlflow.log_artifacts(folder, artifact_path="plots")
    if config_yaml is not None:
        mlflow.log_text(config_yaml, "config.yaml")
    for name, payload in json_artifacts.items():
        mlflow.log_dict(payload, f"{name}.json")
    for name, rows in (tables or {}).items():
        mlflow.log_table(pd.DataFrame(rows), artifact_file=f"{name}.json")


def log_step_metrics(run_id: str, rows: list[dict[str, float]]) -> None:
    """Per-epoch metrics as MLflow step metrics: each row's `epoch` is the step, its other
    keys the metrics (e.g. train_loss, val_roc_auc), in one batch call."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(key, float(value), now, int(row["epoch"])) for row in rows for key, value in row.items()
             if key != "epoch"]
    for start in range(0, len(batch), 1000):  # the tracking API takes at most 1000 metrics per call
        client().log_batch(run_id, metrics=batch[start:start + 1000])


def run_artifact_text(run_id: str, path: str) -> str:
    """A text artifact of a run (e.g. its `config.yaml`), downloaded to a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        local = client().download_artifacts(run_id, path, folder)
        return Path(local).read_text()


def run_url(run_id: str) -> str | None:
    """The MLflow UI page of a run, when the tracking store is a server (else None)."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    experiment_id = client().get_run(run_id).info.experiment_id
    return f"{redact_uri(uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def mark_orphaned(run_id: str, why: str) -> None:
    """End a run another process left RUNNING as FAILED, tagged `mlpipe.orphaned` (`why`)."""
    client().set_tag(run_id, ORPHANED_TAG, why)
    client().set_terminated(run_id, status="FAILED")


def mark_orphaned_runs(experiment: str, lineage_key: str) -> list[str]:
    """Runs of this lineage left RUNNING by a killed attempt (it died while logging, before
    registering): tagged `mlpipe.orphaned` and ended as FAILED, so nobody mistakes their
    partial artifacts for a model. Versions are registered only after every artifact is
    logged, so no version can point at a half-written model."""
    found = client().get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client().search_runs([found.experiment_id],
                                f"tags.`{LINEAGE_KEY}` = '{lineage_key}' and attributes.status = 'RUNNING'")
    for run in runs:
        mark_orphaned(run.info.run_id, "true: its train run stopped while logging")
    return [run.info.run_id for run in runs]


def mark_runs_of_dead_processes() -> list[str]:
    """Runs of every experiment in the store (training, tuning, promotion history, drift) that
    an mlpipe process on this machine left RUNNING when it died: marked orphaned, ended FAILED.
    Runs of live processes, and of processes elsewhere, are left alone."""
    experiments = [e.experiment_id for e in client().search_experiments(max_results=50000)]
    marked = []
    for start in range(0, len(experiments), 100):
        token = None
        while True:
            page = client().search_runs(experiments[start:start + 100],
                                        f"attributes.status = 'RUNNING' and tags.`{OWNER_TAG}` LIKE '%|%'",
                                        max_results=1000, page_token=token)
            for run in page:
                if owner_is_dead(run.data.tags.get(OWNER_TAG, "")):
                    mark_orphaned(run.info.run_id, "true: the process running it was killed")
                    marked.append(run.info.run_id)
            token = page.token
            if not token:
                break
    return marked
