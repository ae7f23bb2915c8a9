"""The promotion lock in a real MLflow SQLite store: held, refreshed, and broken only when its
holder is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from mlpipe.adapters.mlflow.aliases import PromotionLockTimeout, promotion_lock
from mlpipe.core.processes import process_identity

LOCK = "m.promotion-lock"


def leave_lock(pid: int, identity: str, heartbeat_age_s: float = 0.0) -> None:
    beat = str(time.time() - heartbeat_age_s)
    MlflowClient().create_registered_model(LOCK, tags={"owner": "v9", "acquired": beat, "heartbeat": beat,
                                                       "identity": identity, "pid": str(pid)})


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lock_left_by_a_killed_process_on_this_machine_is_broken_at_once(workspace):
    leave_lock(dead_pid(), process_identity())
    started = time.monotonic()
    with promotion_lock("m", owner="v10", wait_s=30):
        assert MlflowClient().get_registered_model(LOCK).tags["owner"] == "v10"
    assert time.monotonic() - started < 5


def test_a_live_holder_with_a_fresh_heartbeat_keeps_the_lock(workspace):
    leave_lock(os.getpid(), process_identity())
    with pytest.raises(PromotionLockTimeout):
        with promotion_lock("m", owner="v10", wait_s=1.5):
            pass
    assert MlflowClient().get_registered_model(LOCK).tags["owner"] == "v9"


def test_a_holder_elsewhere_is_trusted_until_its_heartbeat_goes_stale(workspace):
    leave_lock(os.getpid(), "another-host:1", heartbeat_age_s=5)  # its PID means nothing here
    with pytest.raises(PromotionLockTimeout):
        with promotion_lock("m", owner="v10", wait_s=1.0, stale_s=60):
            pass
    with promotion_lock("m", owner="v10", wait_s=10, stale_s=3):  # 5 s without a heartbeat: stale
        assert MlflowClient().get_registered_model(LOCK).tags["owner"] == "v10"


def test_the_holder_refreshes_its_heartbeat_and_releases(workspace):
    with promotion_lock("m", owner="v10", heartbeat_s=0.2):
        first = float(MlflowClient().get_registered_model(LOCK).tags["heartbeat"])
        # a beat every 0.2 s; on a busy machine one SQLite write can take longer than a second
        deadline = time.monotonic() + 30
        while (beat := float(MlflowClient().get_registered_model(LOCK).tags["heartbeat"])) <= first:
            assert time.monotonic() < deadline, "the holder's heartbeat never moved"
            time.sleep(0.2)
        assert beat > first
    assert MlflowClient().search_registered_models(f"name = '{LOCK}'") == []


def test_a_lock_released_while_the_store_words_its_refusal_is_taken(workspace, monkeypatch):
    """The interleaving a concurrent CI run met against `mlflow server`: our create meets the
    holder's lock (a duplicate name), the holder releases it, and the store's read of the existing
    model, made only to word the refusal, finds nothing: RESOURCE_DOES_NOT_EXIST from a create.
    The lock is free then, and the waiter takes it."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    leave_lock(os.getpid(), process_identity())  # a live holder: nothing else would break it
    read = SqlAlchemyStore.get_registered_model
    released = []

    def holder_releases_first(store, name):
        if name == LOCK and not released:
            read(store, name)  # the lock is there when the create meets it ...
            store.delete_registered_model(name)  # ... and its holder releases it before the store reads it
            released.append(name)
        return read(store, name)

    monkeypatch.setattr(SqlAlchemyStore, "get_registered_model", holder_releases_first)
    with promotion_lock("m", owner="v10", wait_s=5):
        assert MlflowClient().get_registered_model(LOCK).tags["owner"] == "v10"
    assert released == [LOCK]
