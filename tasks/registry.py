"""The MLflow adapter: tracking, model logging, registry lookups and aliases.

Nothing here creates a client at import time. With no `MLFLOW_TRACKING_URI`, MLflow runs
embedded: a SQLite file and an artifact folder under `<project>/.mlpipe/` (git-ignored).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import yaml
from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from tasks.caching import PACKAGE_ROOT, project_home, source_hash

TAG_PREFIX = "mlpipe."
LINEAGE_KEY = TAG_PREFIX + "lineage_key"
TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.", "tasks.features.", "tasks.conform.", "tasks.mlp.", "builtins.")


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


def redact_uri(uri: str) -> str:
    """Drop credentials from a URI (`postgresql://user:pass@host` -> `postgresql://***@host`)."""
    parts = urlsplit(uri)
    if "@" in parts.netloc:
        uri = urlunsplit((parts.scheme, "***@" + parts.netloc.rpartition("@")[2], parts.path, parts.query,
                          parts.fragment))
    return re.sub(r"(?i)((?:key|secret|token|password|signature)=)[^&]+", r"\1***", uri)


def code_version() -> str:
    """The git commit (with `-dirty` and the source hash when files changed), else the source hash."""
    try:
        commit = subprocess.run(["git", "-C", str(PACKAGE_ROOT), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(PACKAGE_ROOT), "status", "--porcelain", "--", "tasks", "flows"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"src-{source_hash()}"
    return f"{commit}-dirty-{source_hash()}" if dirty else commit


@dataclass(frozen=True)
class Lineage:
    """Where a model came from; written as tags on its run and model version."""

    dataset_uri: str
    dataset_fingerprint: str
    config_hash: str
    code_version: str
    source_hash: str
    flow_run_id: str

    @property
    def key(self) -> str:
        """Same data + config + code = same key = same model version."""
        raw = f"{self.dataset_fingerprint}|{self.config_hash}|{self.source_hash}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    def tags(self) -> dict[str, str]:
        return {
            TAG_PREFIX + "dataset_uri": redact_uri(self.dataset_uri),
            TAG_PREFIX + "dataset_fingerprint": self.dataset_fingerprint,
            TAG_PREFIX + "config_hash": self.config_hash,
            TAG_PREFIX + "code_version": self.code_version,
            TAG_PREFIX + "prefect_flow_run_id": self.flow_run_id,
            LINEAGE_KEY: self.key,
        }


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    reused: bool  # True when an identical earlier run's version was found instead


def client():
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


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
        client().set_tag(run.info.run_id, TAG_PREFIX + "orphaned", "true: its train run stopped while logging")
        client().set_terminated(run.info.run_id, status="FAILED")
    return [run.info.run_id for run in runs]


def find_version_by_lineage(name: str, lineage_key: str) -> RegisteredVersion | None:
    """The model version an identical earlier run registered, if any."""
    from mlflow.exceptions import MlflowException

    try:
        found = client().search_model_versions(
            f"name = '{name}' and tags.`{LINEAGE_KEY}` = '{lineage_key}'", max_results=5)
    except MlflowException as error:
        if "RESOURCE_DOES_NOT_EXIST" in str(error.error_code):
            return None
        raise
    complete = [v for v in found if v.status == "READY"]
    if not complete:
        return None
    first = min(complete, key=lambda v: int(v.version))
    return RegisteredVersion(name, str(first.version), first.run_id or "", reused=True)


def trusted_types(model) -> list[str]:
    """The types skops must trust to load `model`, checked against our allow-list so a
    surprising type (something that could run code on load) fails at save time, not in prod."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    refused = [t for t in untrusted if not t.startswith(TRUSTED_TYPE_PREFIXES)]
    if refused:
        raise ValueError(f"model holds types outside the skops allow-list: {refused}")
    return sorted(untrusted)


def model_signature(columns: list[str]):
    """Every input column by name, typed `Any`; outputs `probability` (double) and `label` (long).

    The model conforms raw values itself (`tasks.conform`), so the signature names the columns
    (a missing one is refused, named) and leaves their values to the model: a `double` column
    would refuse int64 frames and numbers stored as text, a `long` one floats with gaps, and
    both the blanks real exports hold."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec(AnyType(), name) for name in columns]),
                          outputs=Schema([ColSpec("double", "probability"), ColSpec("long", "label")]))


def input_example(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows as a client sends them (JSON-friendly: None for missing values)."""
    return frame.astype(object).where(frame.notna(), None)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "scikit-learn", "skops", "numpy", "pandas")]


def ensure_experiment(name: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    root = _local_artifact_root(tracking_uri())
    location = f"{root}/{name}" if root else None
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except Exception:  # another run created it meanwhile
        return mlflow.get_experiment_by_name(name).experiment_id


def log_and_register(
    *,
    model,
    model_name: str,
    experiment: str,
    run_name: str,
    example: pd.DataFrame,
    params: dict[str, str],
    metrics: dict[str, float],
    plots: dict[str, bytes],
    extra_json: dict[str, Any],
    config_yaml: str,
    lineage: Lineage,
    extra_tags: dict[str, str] | None = None,
    tables: dict[str, list[dict[str, Any]]] | None = None,
    step_metrics: list[dict[str, float]] | None = None,
) -> RegisteredVersion:
    """One MLflow run with params, metrics, plots, config and tables (name -> rows, logged as
    MLflow table artifacts `<name>.json`); the model logged with skops (explicit trusted
    types), signature and input example; then registered with lineage tags."""
    import mlflow
    experiment_id = ensure_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                          tags={**lineage.tags(), **(extra_tags or {})}) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        if step_metrics:
            log_step_metrics(run.info.run_id, step_metrics)
        with tempfile.TemporaryDirectory() as folder:
            for name, png in plots.items():
                Path(folder, f"{name}.png").write_bytes(png)
            mlflow.log_artifacts(folder, artifact_path="plots")
        mlflow.log_text(config_yaml, "config.yaml")
        for name, payload in extra_json.items():
            mlflow.log_dict(payload, f"{name}.json")
        for name, rows in (tables or {}).items():
            mlflow.log_table(pd.DataFrame(rows), artifact_file=f"{name}.json")
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=model_signature(list(example.columns)),
            input_example=input_example(example.head(3)),
            serialization_format="skops",
            skops_trusted_types=trusted_types(model),
            pip_requirements=_pip_requirements(),
            code_paths=[str(PACKAGE_ROOT / "tasks")],
        )
        version = mlflow.register_model(info.model_uri, model_name, tags={**lineage.tags(), **(extra_tags or {})},
                                        await_registration_for=300)
    return RegisteredVersion(model_name, str(version.version), run.info.run_id, reused=False)


def log_step_metrics(run_id: str, rows: list[dict[str, float]]) -> None:
    """Per-epoch metrics as MLflow step metrics: each row's `epoch` is the step, its other
    keys the metrics (e.g. train_loss, val_roc_auc), in one batch call."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(key, float(value), now, int(row["epoch"])) for row in rows for key, value in row.items()
             if key != "epoch"]
    for start in range(0, len(batch), 1000):  # the tracking API takes at most 1000 metrics per call
        client().log_batch(run_id, metrics=batch[start:start + 1000])


def load_version(name: str, version: str):
    """Load a registered sklearn Pipeline (skops, with the trusted types recorded at save)."""
    import mlflow.sklearn

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.sklearn.load_model(f"models:/{name}/{version}")


def alias_version(name: str, alias: str) -> str | None:
    """The version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, version)


def tag_version(name: str, version: str, tags: dict[str, Any]) -> None:
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, str(value))


def describe_version(name: str, version: str, markdown: str) -> None:
    """Set a model version's description (the MLflow UI renders it as markdown)."""
    client().update_model_version(name, version, description=markdown)


def version_description(name: str, version: str) -> str:
    return client().get_model_version(name, version).description or ""


def describe_model(name: str, markdown: str) -> None:
    """Set the registered model's description."""
    client().update_registered_model(name, description=markdown)


def run_url(run_id: str) -> str | None:
    """The MLflow UI page of a run, when the tracking store is a server (else None)."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    experiment_id = client().get_run(run_id).info.experiment_id
    return f"{redact_uri(uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def version_tags(name: str, version: str) -> dict[str, str]:
    return dict(client().get_model_version(name, version).tags)


def is_transient_tracking_error(task, task_run, state) -> bool:
    """Retry connection problems and server errors of the tracking server, nothing else."""
    from mlflow.exceptions import MlflowException

    try:
        state.result()
    except (ConnectionError, TimeoutError):
        return True
    except MlflowException as error:
        text = str(error)
        return any(s in text for s in ("Max retries exceeded", "Connection refused", "503", "502", "504",
                                       "TEMPORARILY_UNAVAILABLE", "database is locked"))
    except Exception as error:
        return type(error).__module__.startswith(("requests", "urllib3"))
    return False


def champion_score(name: str, version: str, holdout: pd.DataFrame, target: str, columns: list[str],
                   scorer) -> float:
    """Re-score a registered version on `holdout` with `scorer(y, proba)`."""
    model = load_version(name, version)
    proba = model.predict_proba(holdout[columns])[:, 1]
    return float(scorer(holdout[target].to_numpy(), np.asarray(proba)))



# Never cached (an identical rerun is caught by the lineage check instead): Prefect's default key
# would hash the holdout frame and the fitted model on every run.
@task(name="register", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
      retry_jitter_factor=0.5, retry_condition_fn=is_transient_tracking_error)
def register_task(model, evaluation, holdout: pd.DataFrame, columns: list[str], config,
                  fingerprint, validation_report, extra_tags: dict[str, str] | None = None,
                  tables: dict[str, list[dict]] | None = None) -> RegisteredVersion:
    """Log the run and register the model, unless an identical run already did."""
    logger = get_run_logger()
    lineage = Lineage(
        dataset_uri=config.data.uri,
        dataset_fingerprint=str(fingerprint),
        config_hash=config.config_hash(),
        code_version=code_version(),
        source_hash=source_hash(),
        flow_run_id=str(runtime.flow_run.id or ""),
    )
    orphans = mark_orphaned_runs(config.tracking.experiment, lineage.key)
    if orphans:
        logger.warning("marked %d run(s) of an earlier, interrupted attempt as orphaned: %s", len(orphans), orphans)
    existing = find_version_by_lineage(config.tracking.model_name, lineage.key)
    if existing is not None:
        logger.info("identical data, config and code already registered as %s v%s: no new version",
                    existing.name, existing.version)
        return existing
    safe_config = config.model_copy(update={"data": config.data.model_copy(
        update={"uri": redact_uri(config.data.uri)})})
    model.set_params(threshold=config.evaluation.threshold)  # its `label` uses evaluation's threshold
    version = log_and_register(
        model=model,
        model_name=config.tracking.model_name,
        experiment=config.tracking.experiment,
        run_name=f"train-{runtime.flow_run.name or 'local'}",
        example=holdout[columns].head(5),
        params={**safe_config.flat_params(),
                **{f"evaluation.{kind}_rows_used": str(rows) for kind, rows in evaluation.sample_rows.items()}},
        metrics=evaluation.metrics,
        plots=evaluation.plots,
        extra_json={"confusion_matrix": {"labels": [0, 1], "matrix": evaluation.confusion},
                    "permutation_importance": evaluation.importances,
                    "validation": {"rows": validation_report.rows,
                                   "coerced_columns": validation_report.coerced_columns,
                                   "id_columns": validation_report.id_columns,
                                   "warnings": validation_report.warnings}},
        config_yaml=yaml.safe_dump(safe_config.model_dump(mode="json"), sort_keys=False),
        lineage=lineage,
        extra_tags={"mlpipe.model_family": config.model.family,
                    **{k: redact_uri(v) if k == TAG_PREFIX + "dataset_prefix" else v
                       for k, v in (extra_tags or {}).items()},
                    **getattr(evaluation, "tags", {}), **_ray_tags(model)},
        tables=tables,
        step_metrics=getattr(model[-1], "history_", None),
    )
    logger.info("registered %s v%s (run %s)", version.name, version.version, version.run_id)
    return version


def _ray_tags(model) -> dict[str, str]:
    """`mlpipe.ray_job_id` of the Ray Train run that fitted the model, if one did."""
    job = getattr(model[-1], "ray_job_id_", "")
    return {"mlpipe.ray_job_id": job} if job else {}


# -- monitoring: the champion's run, and runs that log no model ---------------------------------

def version_run_id(name: str, version: str) -> str:
    """The MLflow run that logged model version `name` v`version`."""
    run_id = client().get_model_version(name, version).run_id
    if not run_id:
        raise ValueError(f"{name} v{version} has no MLflow run: it was not registered by this pipeline")
    return run_id


def run_artifact_text(run_id: str, path: str) -> str:
    """A text artifact of a run (e.g. its `config.yaml`), downloaded to a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        local = client().download_artifacts(run_id, path, folder)
        return Path(local).read_text()


def log_run(*, experiment: str, run_name: str, params: dict[str, str], metrics: dict[str, float],
            json_artifacts: dict[str, Any], tags: dict[str, str] | None = None) -> str:
    """One MLflow run with params, metrics, tags and `<name>.json` artifacts; returns its id."""
    import mlflow

    experiment_id = ensure_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags or {}) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        for name, payload in json_artifacts.items():
            mlflow.log_dict(payload, f"{name}.json")
    return run.info.run_id


# -- Batch scoring: which version to load and what rows it accepts -----------------------------

class ModelLookupError(LookupError):
    """The registered model, version or alias asked for does not exist (never retried)."""


_NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def resolve_model_version(name: str, ref: str) -> str:
    """The version number `ref` names: a version number ("3") or an alias ("champion").

    Unlike `alias_version`, only "not found" becomes a `ModelLookupError`; any other tracking
    error propagates, so an unreachable server is retried instead of reported as a missing alias.
    """
    from mlflow.exceptions import MlflowException

    ref = ref.strip()
    by_number = ref.isdigit()
    try:
        if by_number:
            return str(client().get_model_version(name, str(int(ref))).version)
        return str(client().get_model_version_by_alias(name, ref).version)
    except MlflowException as error:
        if str(error.error_code) not in _NOT_FOUND_CODES:
            raise
        if "Registered Model with name" in str(error):
            raise ModelLookupError(f"model {name!r} is not registered: train it first") from None
        what = f"version {int(ref)}" if by_number else f"alias {ref!r}"
        raise ModelLookupError(f"model {name!r} has no {what}; pass an existing version number or "
                               "alias (champion, challenger)") from None


def model_input_schema(name: str, version: str) -> list[tuple[str, str]]:
    """(column, MLflow type name) for each input column in the version's signature, in order:
    e.g. ("tenure", "double"), ("contract", "string")."""
    import mlflow
    from mlflow.models import get_model_info
    from mlflow.types import DataType

    mlflow.set_tracking_uri(tracking_uri())
    signature = get_model_info(f"models:/{name}/{version}").signature
    inputs = signature.inputs if signature is not None else None
    if inputs is None or inputs.is_tensor_spec() or not inputs.has_input_names():
        raise ValueError(f"{name} v{version} has no column signature: it cannot be scored row by row "
                         "(register it with a signature from a DataFrame)")
    return [(spec.name, spec.type.name if isinstance(spec.type, DataType) else str(spec.type))
            for spec in inputs.inputs]


# -- promotion: a registry-wide lock and an append-only history ---------------------------------

class PromotionLockTimeout(TimeoutError):
    """Another promotion held the lock for longer than we were willing to wait."""


def _process_identity() -> str:
    """This machine and PID namespace: two processes with the same identity can check each
    other's PIDs (a container with its own PID namespace gets another identity)."""
    import socket

    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}:{namespace}"


def _holder_is_dead(tags: dict[str, str]) -> bool:
    """True when the lock's holder ran on this machine (same PID namespace) and its process is gone."""
    if tags.get("identity") != _process_identity() or not tags.get("pid", "").isdigit():
        return False
    try:
        os.kill(int(tags["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextlib.contextmanager
def promotion_lock(name: str, owner: str, wait_s: float = 300.0, stale_s: float = 60.0, heartbeat_s: float = 10.0):
    """Mutual exclusion for changing `name`'s aliases, kept in the MLflow store itself so it
    holds across processes and machines: creating a registered model is atomic and fails if
    it exists, so `<name>.promotion-lock` exists exactly while someone holds the lock.

    The holder refreshes a heartbeat tag every `heartbeat_s`. A waiter breaks the lock when the
    heartbeat is older than `stale_s`, or at once when the holder ran on this machine and its
    process is gone (a killed `mlpipe train` must not block promotions for minutes)."""
    import random
    import threading
    import time as clock

    from mlflow.exceptions import MlflowException

    lock = f"{name}.promotion-lock"
    c = client()
    deadline = clock.monotonic() + wait_s
    while True:
        now = str(clock.time())
        try:
            c.create_registered_model(lock, tags={"owner": owner, "acquired": now, "heartbeat": now,
                                                  "identity": _process_identity(), "pid": str(os.getpid())},
                                      description=f"held while {owner} changes aliases of {name}")
            break
        except MlflowException as error:
            if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code) and "already exists" not in str(error):
                raise
        try:
            tags = c.get_registered_model(lock).tags
            beat = float(tags.get("heartbeat", tags.get("acquired", "0")))
            if clock.time() - beat > stale_s or _holder_is_dead(tags):
                # Re-read just before breaking: another waiter may have broken it and taken it meanwhile.
                if c.get_registered_model(lock).tags.get("acquired") == tags.get("acquired"):
                    c.delete_registered_model(lock)
                continue
        except MlflowException:
            continue  # released meanwhile
        if clock.monotonic() > deadline:
            raise PromotionLockTimeout(f"the promotion lock of {name} is held by another run (waited {wait_s:.0f} s)")
        clock.sleep(0.2 + random.random() * 0.3)

    released = threading.Event()

    def heartbeat() -> None:
        while not released.wait(heartbeat_s):
            with contextlib.suppress(MlflowException):
                c.set_registered_model_tag(lock, "heartbeat", str(clock.time()))

    beating = threading.Thread(target=heartbeat, name="promotion-lock-heartbeat", daemon=True)
    beating.start()
    try:
        yield
    finally:
        released.set()
        beating.join()
        with contextlib.suppress(MlflowException):
            c.delete_registered_model(lock)


HISTORY_SUFFIX = "-promotions"


def record_promotion(name: str, *, version: str, alias: str, previous: str | None, action: str, reason: str,
                     scores: dict[str, float] | None = None, flow_run_id: str = "",
                     details: dict[str, str] | None = None, comparison_keys: list[str] | None = None) -> str:
    """Append one entry to `name`'s promotion history: an MLflow run of its own in the
    experiment `<name>-promotions`. Runs are created atomically, so concurrent entries are
    never lost (a tag holding a list would be read-modify-write). `comparison_keys` (the row
    keys the models were compared on: hashes, no data) go in `comparison_set.json`."""
    experiment_id = ensure_experiment(name + HISTORY_SUFFIX)
    c = client()
    run = c.create_run(experiment_id, run_name=f"{action}-v{version}", tags={
        "mlpipe.model": name, "mlpipe.version": str(version), "mlpipe.alias": alias,
        "mlpipe.previous_champion": previous or "", "mlpipe.action": action, "mlpipe.reason": reason[:4000],
        "mlpipe.prefect_flow_run_id": flow_run_id,
        **{f"mlpipe.{k}": str(v)[:4000] for k, v in (details or {}).items()}})
    for key, value in (scores or {}).items():
        if value is not None:
            c.log_metric(run.info.run_id, key, float(value))
    if comparison_keys is not None:
        c.log_dict(run.info.run_id, {"row_keys": comparison_keys}, "comparison_set.json")
    c.set_terminated(run.info.run_id)
    return run.info.run_id


def promotion_history(name: str) -> list[dict[str, str]]:
    """Every recorded promotion decision and rollback of `name`, oldest first."""
    experiment = client().get_experiment_by_name(name + HISTORY_SUFFIX)
    if experiment is None:
        return []
    runs = client().search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"],
                                max_results=5000)
    return [{"at": str(r.info.start_time), "run_id": r.info.run_id, **{k: str(v) for k, v in r.data.metrics.items()},
             **{k.removeprefix("mlpipe."): v for k, v in r.data.tags.items() if k.startswith("mlpipe.")}}
            for r in runs]


def comparison_keys(history_run_id: str) -> list[str]:
    """The row keys (hex) one promotion decision compared the models on; [] when none."""
    try:
        payload = run_artifact_text(history_run_id, "comparison_set.json")
    except Exception:  # no comparison (first model, rollback): no artifact
        return []
    import json

    return list(json.loads(payload).get("row_keys", []))


class RollbackError(RuntimeError):
    """The version asked for does not exist or does not load; champion was left as it was."""


def rollback(name: str, version: str, reason: str = "manual rollback") -> str | None:
    """Point `champion` at `version` (which must load), record it; returns the previous champion."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        client().get_model_version(name, version)
        mlflow.set_tracking_uri(tracking_uri())
        mlflow.pyfunc.load_model(f"models:/{name}/{version}")  # never point champion at a model that won't load
    except (MlflowException, OSError, ValueError) as error:
        raise RollbackError(str(error)) from None
    with promotion_lock(name, owner=f"rollback-to-v{version}"):
        previous = alias_version(name, "champion")
        set_alias(name, "champion", version)
        tag_version(name, version, {"promotion.alias": "champion", "promotion.reason": f"rollback: {reason}"})
        record_promotion(name, version=version, alias="champion", previous=previous, action="rollback", reason=reason)
    return previous


# -- tuning studies: a parent run per study, a child run per trial ------------------------------

STUDY_TAG, TRIAL_TAG = "optuna.study", "optuna.trial"
_TERMINAL = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}


def study_run(experiment: str, study_name: str) -> tuple[str, str]:
    """(experiment id, run id) of the study's parent run: reused when the study resumes, so all
    its trials sit under one run."""
    experiment_id = ensure_experiment(experiment)
    found = client().search_runs([experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and "
                                 f"tags.`{TAG_PREFIX}kind` = 'study'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client().update_run(run_id, status="RUNNING")
        return experiment_id, run_id
    run = client().create_run(experiment_id, run_name=f"study-{study_name}",
                              tags={STUDY_TAG: study_name, TAG_PREFIX + "kind": "study"})
    return experiment_id, run.info.run_id


def logged_trials(experiment_id: str, parent_run_id: str) -> set[int]:
    """Numbers of the trials that already have a child run. One left half-written (RUNNING) by a
    killed run is deleted, so that trial is logged again, whole."""
    numbers: set[int] = set()
    token = None
    while True:
        page = client().search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                    max_results=1000, page_token=token)
        for run in page:
            if run.info.status == "RUNNING":
                client().delete_run(run.info.run_id)
            elif TRIAL_TAG in run.data.tags:
                numbers.add(int(run.data.tags[TRIAL_TAG]))
        token = page.token
        if not token:
            return numbers


def log_trial_run(experiment_id: str, parent_run_id: str, study_name: str, *, number: int, state: str,
                  params: dict[str, Any], metric: str, fold_scores: list[float], value: float | None,
                  seconds: float | None, worker: int | None = None, error: str | None = None) -> str:
    """One trial as a child run of its study's run: its params, fold scores, CV score, state."""
    from mlflow.entities import Metric, Param

    tags = {"mlflow.parentRunId": parent_run_id, STUDY_TAG: study_name, TRIAL_TAG: str(number),
            "optuna.state": state}
    if worker is not None:
        tags["optuna.worker"] = str(worker)
    if error:
        tags["optuna.error"] = error[:5000]
    run = client().create_run(experiment_id, run_name=f"trial-{number}", tags=tags)
    now = int(time.time() * 1000)
    metrics = [Metric(f"fold_{metric}", float(s), now, i) for i, s in enumerate(fold_scores)]
    if seconds is not None:
        metrics.append(Metric("trial_seconds", float(seconds), now, 0))
    if value is not None:
        metrics.append(Metric(f"cv_{metric}", float(value), now, 0))
    client().log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()])
    client().set_terminated(run.info.run_id, status=_TERMINAL.get(state, "FAILED"))
    return run.info.run_id


def finish_study_run(parent_run_id: str, *, metric: str, best_params: dict[str, Any], best_value: float,
                     best_trial: int, counts: dict[str, int], settings: dict[str, Any],
                     plots: dict[str, bytes]) -> None:
    """The study's outcome on its parent run: best params and score, trial counts, plots."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    params = [Param(f"best.{k}", str(v)) for k, v in best_params.items()]
    params += [Param(k, str(v)) for k, v in settings.items()]
    existing = client().get_run(parent_run_id).data.params
    params = [p for p in params if p.key not in existing]  # params are write-once; a resume keeps them
    metrics = [Metric(f"best_cv_{metric}", best_value, now, 0)]
    metrics += [Metric(f"trials_{state}", count, now, 0) for state, count in counts.items()]
    client().log_batch(parent_run_id, metrics=metrics, params=params)
    client().set_tag(parent_run_id, "optuna.best_trial", str(best_trial))
    client().log_dict(parent_run_id, {"best_params": best_params, "best_value": best_value,
                                      "best_trial": best_trial}, "best_params.json")
    with tempfile.TemporaryDirectory() as folder:
        for name, png in plots.items():
            path = Path(folder) / f"{name}.png"
            path.write_bytes(png)
            client().log_artifact(parent_run_id, str(path), "plots")
    client().set_terminated(parent_run_id, status="FINISHED")


def fail_study_run(parent_run_id: str) -> None:
    client().set_terminated(parent_run_id, status="FAILED")
