"""Aliases (champion, challenger) and how they change safely: the registry-wide promotion lock
(with the process-liveness check that breaks a dead holder's lock), the append-only promotion
history, and rollback.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from mlpipe.adapters.mlflow.tracking import (
    OWNER_TAG,
    client,
    ensure_experiment,
    mark_orphaned,
    run_artifact_text,
    tracking_uri,
)
from mlpipe.adapters.mlflow.versions import tag_version
from mlpipe.core.processes import owner_token, pid_is_dead, process_identity

CHAMPION = "champion"
HISTORY_SUFFIX = "-promotions"


def alias_version(name: str, alias: str) -> str | None:
    """The version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def set_alias(name: str, alias: str, version: str) -> None:
    """Point `alias` of registered model `name` at `version`."""
    client().set_registered_model_alias(name, alias, version)


# -- the promotion lock ---------------------------------------------------------------------------

class PromotionLockTimeout(TimeoutError):
    """Another promotion held the lock for longer than we were willing to wait."""


def _holder_is_dead(tags: dict[str, str]) -> bool:
    """True when the lock's holder ran on this machine (same PID namespace) and its process is gone."""
    return pid_is_dead(tags.get("identity", ""), tags.get("pid", ""), tags.get("started", ""))


def _released_meanwhile(error) -> bool:
    """A create that found the lock taken, whose holder released it before the store answered:
    MLflow's SQL store meets the duplicate name, then reads the existing model to word its error,
    and that read finds nothing (RESOURCE_DOES_NOT_EXIST). The lock is free: try again at once."""
    return "RESOURCE_DOES_NOT_EXIST" in str(error.error_code)


@contextlib.contextmanager
def promotion_lock(name: str, owner: str, wait_s: float = 300.0, stale_s: float = 60.0, heartbeat_s: float = 10.0):
    """Mutual exclusion for changing `name`'s aliases, kept in the MLflow store itself so it
    holds across processes and machines: creating a registered model is atomic and fails if
    it exists, so `<name>.promotion-lock` exists exactly while someone holds the lock.

    The holder refreshes a heartbeat tag every `heartbeat_s`. A waiter breaks the lock when the
    heartbeat is older than `stale_s`, or at once when the holder ran on this machine and its
    process is gone (a killed `mlpipe train` must not block promotions for minutes)."""
    from mlflow.exceptions import MlflowException

    lock = f"{name}.promotion-lock"
    c = client()
    deadline = time.monotonic() + wait_s
    while True:
        now = str(time.time())
        try:
            c.create_registered_model(lock, tags={"owner": owner, "acquired": now, "heartbeat": now,
                                                  "identity": process_identity(), "pid": str(os.getpid()),
                                                  "started": owner_token().rsplit("|", 1)[1]},
                                      description=f"held while {owner} changes aliases of {name}")
            break
        except MlflowException as error:
            if _released_meanwhile(error):
                continue
            if "RESOURCE_ALREADY_EXISTS" not in str(error.error_code) and "already exists" not in str(error):
                raise
        try:
            tags = c.get_registered_model(lock).tags
            beat = float(tags.get("heartbeat", tags.get("acquired", "0")))
            if time.time() - beat > stale_s or _holder_is_dead(tags):
                # Re-read just before breaking: another waiter may have broken it and taken it meanwhile.
                if c.get_registered_model(lock).tags.get("acquired") == tags.get("acquired"):
                    c.delete_registered_model(lock)
                continue
        except MlflowException:
            continue  # released meanwhile
        if time.monotonic() > deadline:
            raise PromotionLockTimeout(f"the promotion lock of {name} is held by another run (waited {wait_s:.0f} s)")
        time.sleep(0.2 + random.random() * 0.3)

    released = threading.Event()

    def heartbeat() -> None:
        while not released.wait(heartbeat_s):
            with contextlib.suppress(MlflowException):
                c.set_registered_model_tag(lock, "heartbeat", str(time.time()))

    beating = threading.Thread(target=heartbeat, name="promotion-lock-heartbeat", daemon=True)
    beating.start()
    try:
        yield
    finally:
        released.set()
        beating.join()
        with contextlib.suppress(MlflowException):
            c.delete_registered_model(lock)


# -- the promotion history ------------------------------------------------------------------------
# An entry that goes with an alias move is written first as `pending`, complete, and marked
# `done` once the alias has moved: a process killed in between leaves a pending entry, never a
# move without one. The next change of the model's aliases (under the lock) settles it from
# what the registry shows: `done` when the alias points at the entry's version, else
# `not applied`; an entry whose own writing was cut short (its run still RUNNING) is `not
# applied` and its run marked orphaned. `promotion_history` leaves `not applied` entries out.
KEYS_IN_JSON, KEYS_FILE = 100_000, "comparison_set.npy"  # more keys than this: a binary artifact
ENTRY_TAG = "mlpipe.entry"
PENDING, DONE, NOT_APPLIED = "pending", "done", "not applied"


def record_promotion(name: str, *, version: str, alias: str, previous: str | None, action: str, reason: str,
                     scores: dict[str, float] | None = None, flow_run_id: str = "",
                     details: dict[str, str] | None = None, comparison_keys: np.ndarray | None = None,
                     pending: bool = False) -> str:
    """Append one entry to `name`'s promotion history: an MLflow run of its own in the
    experiment `<name>-promotions`. Runs are created atomically, so concurrent entries are
    never lost (a tag holding a list would be read-modify-write). `comparison_keys` (the uint64
    row keys the models were compared on: hashes, no data) go in `comparison_set.json` as hex,
    or past KEYS_IN_JSON keys (a streamed table's holdout) in `comparison_set.npy`, 8 bytes a key.
    With `pending`, the entry awaits `complete_promotion` (the alias move it records comes next)."""
    experiment_id = ensure_experiment(name + HISTORY_SUFFIX)
    c = client()
    run = c.create_run(experiment_id, run_name=f"{action}-v{version}", tags={
        "mlpipe.model": name, "mlpipe.version": str(version), "mlpipe.alias": alias,
        "mlpipe.previous_champion": previous or "", "mlpipe.action": action, "mlpipe.reason": reason[:4000],
        "mlpipe.prefect_flow_run_id": flow_run_id, ENTRY_TAG: PENDING if pending else DONE, OWNER_TAG: owner_token(),
        **{f"mlpipe.{k}": str(v)[:4000] for k, v in (details or {}).items()}})
    for key, value in (scores or {}).items():
        if value is not None:
            c.log_metric(run.info.run_id, key, float(value))
    if comparison_keys is not None:
        keys = np.asarray(comparison_keys, dtype="uint64")
        if len(keys) <= KEYS_IN_JSON:
            c.log_dict(run.info.run_id, {"row_keys": _hex(keys)}, "comparison_set.json")
        else:
            with tempfile.TemporaryDirectory() as folder:
                np.save(Path(folder, KEYS_FILE), keys)
                c.log_artifact(run.info.run_id, str(Path(folder, KEYS_FILE)))
    c.set_terminated(run.info.run_id)
    return run.info.run_id


def complete_promotion(run_id: str) -> None:
    """The alias move a pending entry records has happened."""
    client().set_tag(run_id, ENTRY_TAG, DONE)


def settle_pending_entries(name: str) -> list[tuple[str, str]]:
    """Settle the pending entries of `name`'s history that a killed process left (call under the
    promotion lock: no live process is between writing an entry and moving its alias then).
    Returns (run id, new state) for each."""
    experiment = client().get_experiment_by_name(name + HISTORY_SUFFIX)
    if experiment is None:
        return []
    settled = []
    for run in client().search_runs([experiment.experiment_id], f"tags.`{ENTRY_TAG}` = '{PENDING}'"):
        tags = run.data.tags
        if run.info.status == "RUNNING":  # cut short while being written: the move never started
            mark_orphaned(run.info.run_id, "true: its process stopped while writing this history entry")
            state = NOT_APPLIED
        else:
            moved = alias_version(name, tags.get("mlpipe.alias", "")) == tags.get("mlpipe.version")
            state = DONE if moved else NOT_APPLIED
        client().set_tag(run.info.run_id, ENTRY_TAG, state)
        settled.append((run.info.run_id, state))
    return settled


def promotion_history(name: str) -> list[dict[str, str]]:
    """Every recorded promotion decision and rollback of `name`, oldest first (entries whose
    alias move never happened left out; one still pending says `entry: pending`)."""
    experiment = client().get_experiment_by_name(name + HISTORY_SUFFIX)
    if experiment is None:
        return []
    runs = client().search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"],
                                max_results=5000)
    return [{"at": str(r.info.start_time), "run_id": r.info.run_id, **{k: str(v) for k, v in r.data.metrics.items()},
             **{k.removeprefix("mlpipe."): v for k, v in r.data.tags.items() if k.startswith("mlpipe.")}}
            for r in runs if r.data.tags.get(ENTRY_TAG) != NOT_APPLIED]


def is_no_op(entry: dict[str, str]) -> bool:
    """A history entry that changed nothing: a rerun's decision on the version that already was
    the champion (an identical rerun reuses its version)."""
    return entry.get("action") != "rollback" and entry.get("version") == entry.get("previous_champion")


def _hex(keys: np.ndarray) -> list[str]:
    """uint64 row keys as the history shows them: 16 hex digits each."""
    return [format(int(k), "016x") for k in keys]


def comparison_keys(history_run_id: str) -> list[str]:
    """The row keys (hex) one promotion decision compared the models on; [] when none."""
    names = {item.path for item in client().list_artifacts(history_run_id)}
    if KEYS_FILE in names:
        with tempfile.TemporaryDirectory() as folder:
            keys = np.load(client().download_artifacts(history_run_id, KEYS_FILE, folder))
        return _hex(keys)
    if "comparison_set.json" not in names:  # no comparison (first model, rollback): no artifact
        return []
    return list(json.loads(run_artifact_text(history_run_id, "comparison_set.json")).get("row_keys", []))


# -- rollback -------------------------------------------------------------------------------------

class RollbackError(RuntimeError):
    """The version asked for does not exist or does not load; champion was left as it was."""


def rollback(name: str, version: str, reason: str = "manual rollback") -> str | None:
    """Point `champion` at `version` (which must load), record it; returns the previous champion."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        client().get_model_version(name, version)
        if alias_version(name, CHAMPION) == str(int(version)):
            raise RollbackError(f"v{int(version)} is already the champion: nothing to roll back")
        mlflow.set_tracking_uri(tracking_uri())
        mlflow.pyfunc.load_model(f"models:/{name}/{version}")  # never point champion at a model that won't load
    except (MlflowException, OSError, ValueError) as error:
        raise RollbackError(str(error)) from None
    with promotion_lock(name, owner=f"rollback-to-v{version}"):
        settle_pending_entries(name)
        previous = alias_version(name, CHAMPION)
        entry = record_promotion(name, version=version, alias=CHAMPION, previous=previous, action="rollback",
                                 reason=reason, pending=True)
        tag_version(name, version, {"promotion.alias": CHAMPION, "promotion.reason": f"rollback: {reason}"})
        set_alias(name, CHAMPION, version)
        complete_promotion(entry)
    return previous
