"""Optuna studies in MLflow: a parent run per study (reused when the study resumes), a child
run per trial with its params, fold scores and state, and the study's outcome on the parent.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from mlpipe.adapters.mlflow.tracking import ORPHANED_TAG, OWNER_TAG, client, ensure_experiment, owner_tags
from mlpipe.core.lineage import TAG_PREFIX

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
        client().set_tag(run_id, OWNER_TAG, owner_tags()[OWNER_TAG])  # this process resumes it
        if ORPHANED_TAG in found[0].data.tags:  # a killed attempt's: running again now
            client().delete_tag(run_id, ORPHANED_TAG)
        client().update_run(run_id, status="RUNNING")
        return experiment_id, run_id
    run = client().create_run(experiment_id, run_name=f"study-{study_name}",
                              tags={STUDY_TAG: study_name, TAG_PREFIX + "kind": "study", **owner_tags()})
    return experiment_id, run.info.run_id


def logged_trials(experiment_id: str, parent_run_id: str) -> set[int]:
    """Numbers of the trials that already have a child run. One left half-written (RUNNING, or
    marked orphaned since) by a killed run is deleted, so that trial is logged again, whole."""
    numbers: set[int] = set()
    token = None
    while True:
        page = client().search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                    max_results=1000, page_token=token)
        for run in page:
            if run.info.status == "RUNNING" or ORPHANED_TAG in run.data.tags:  # orphaned: ended by a later sweep
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
            "optuna.state": state, **owner_tags()}
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
    """End a study's parent run as FAILED (no trial completed)."""
    client().set_terminated(parent_run_id, status="FAILED")
