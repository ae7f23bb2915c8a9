"""mlpipe.adapters.mlflow.aliases in a real SQLite MLflow store: aliases, the promotion lock and
its liveness check, the promotion history, rollback. (tests/integration/test_promotion_lock.py
covers breaking a stale or dead holder's lock.)"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from mlflow import MlflowClient

from mlpipe.adapters.mlflow.aliases import (
    PromotionLockTimeout,
    RollbackError,
    _holder_is_dead,
    alias_version,
    comparison_keys,
    complete_promotion,
    is_no_op,
    promotion_history,
    promotion_lock,
    record_promotion,
    rollback,
    set_alias,
    settle_pending_entries,
)
from mlpipe.core.processes import process_identity


def test_alias_version_is_none_until_set(register_tiny_model):
    register_tiny_model("m")
    assert alias_version("m", "champion") is None
    set_alias("m", "champion", "1")
    assert alias_version("m", "champion") == "1"
    assert alias_version("not-registered", "champion") is None


# -- the lock -------------------------------------------------------------------------------------

def test_holder_liveness_is_checked_only_on_this_machine():
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    here = process_identity()
    assert _holder_is_dead({"identity": here, "pid": str(finished.pid)})
    assert not _holder_is_dead({"identity": here, "pid": str(os.getpid())})
    assert not _holder_is_dead({"identity": "elsewhere:1", "pid": str(finished.pid)})
    assert not _holder_is_dead({"identity": here, "pid": ""})


def test_the_lock_admits_one_holder_at_a_time(workspace):
    inside, overlaps = [], []

    def promote(owner: str) -> None:
        with promotion_lock("m", owner=owner, wait_s=60):
            inside.append(owner)
            if len(inside) > 1:
                overlaps.append(tuple(inside))
            time.sleep(0.3)
            inside.remove(owner)

    threads = [threading.Thread(target=promote, args=(f"v{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    assert "m.promotion-lock" not in {m.name for m in MlflowClient().search_registered_models()}


def test_the_lock_is_released_when_the_block_raises(workspace):
    with pytest.raises(RuntimeError), promotion_lock("m", owner="v1"):
        raise RuntimeError("promotion failed")
    with promotion_lock("m", owner="v2", wait_s=1):
        assert MlflowClient().get_registered_model("m.promotion-lock").tags["owner"] == "v2"


def test_a_waiter_gives_up_after_its_wait(workspace):
    with promotion_lock("m", owner="v1"):
        started = time.monotonic()
        with pytest.raises(PromotionLockTimeout, match="held by another run"), promotion_lock("m", "v2", wait_s=0.5):
            pass
        assert time.monotonic() - started < 5


# -- history --------------------------------------------------------------------------------------

def test_history_records_each_decision_in_order(workspace):
    assert promotion_history("m") == []
    first = record_promotion("m", version="1", alias="champion", previous=None, action="promote",
                             reason="no champion yet", scores={"candidate_score": 0.8, "champion_score": None})
    second = record_promotion("m", version="2", alias="challenger", previous="1", action="challenger",
                              reason="worse", details={"comparison_basis": "same hash split"},
                              comparison_keys=np.array([0xFF, 1], dtype="uint64"))
    history = promotion_history("m")
    assert [h["run_id"] for h in history] == [first, second]
    assert history[0]["version"] == "1" and history[0]["previous_champion"] == ""
    assert history[0]["candidate_score"] == "0.8" and "champion_score" not in history[0]
    assert history[1]["comparison_basis"] == "same hash split" and history[1]["action"] == "challenger"
    assert comparison_keys(second) == ["00000000000000ff", "0000000000000001"]
    assert comparison_keys(first) == []


def test_a_large_comparison_set_keeps_its_keys_in_a_binary_artifact(workspace, monkeypatch):
    """A streamed table's holdout can hold millions of keys: past KEYS_IN_JSON they are stored as
    uint64 (8 bytes a key, not a JSON list of hex strings) and read back the same."""
    from mlpipe.adapters.mlflow import aliases

    monkeypatch.setattr(aliases, "KEYS_IN_JSON", 2)
    keys = np.array([2**64 - 1, 0, 7], dtype="uint64")
    run = record_promotion("m", version="1", alias="champion", previous=None, action="promote", reason="r",
                           comparison_keys=keys)
    assert {a.path for a in aliases.client().list_artifacts(run)} == {aliases.KEYS_FILE}
    assert comparison_keys(run) == ["ffffffffffffffff", "0000000000000000", "0000000000000007"]


def test_a_pending_entry_is_settled_from_where_its_alias_points(register_tiny_model):
    """A process killed between writing an entry and moving the alias leaves it pending; the next
    change under the lock makes it done when the alias moved, else leaves it out of the history."""
    register_tiny_model("m")
    register_tiny_model("m", fingerprint="sha256:bb")
    moved = record_promotion("m", version="1", alias="champion", previous=None, action="promote", reason="r",
                             pending=True)
    set_alias("m", "champion", "1")  # killed before complete_promotion
    not_moved = record_promotion("m", version="2", alias="champion", previous="1", action="promote", reason="r",
                                 pending=True)  # killed before set_alias
    assert [h["entry"] for h in promotion_history("m")] == ["pending", "pending"]
    assert sorted(settle_pending_entries("m")) == sorted([(moved, "done"), (not_moved, "not applied")])
    assert [(h["run_id"], h["entry"]) for h in promotion_history("m")] == [(moved, "done")]
    assert settle_pending_entries("m") == []
    done = record_promotion("m", version="2", alias="challenger", previous="1", action="challenger", reason="r",
                            pending=True)
    set_alias("m", "challenger", "2")
    complete_promotion(done)
    assert settle_pending_entries("m") == [] and promotion_history("m")[-1]["entry"] == "done"


def test_an_entry_cut_short_while_written_is_orphaned_and_left_out(register_tiny_model):
    register_tiny_model("m")
    client = MlflowClient()
    record_promotion("m", version="1", alias="champion", previous=None, action="promote", reason="r")
    experiment = client.get_experiment_by_name("m-promotions").experiment_id
    half = client.create_run(experiment, tags={"mlpipe.version": "1", "mlpipe.alias": "champion",
                                               "mlpipe.action": "promote", "mlpipe.entry": "pending"}).info.run_id
    assert settle_pending_entries("m") == [(half, "not applied")]
    run = client.get_run(half)
    assert run.info.status == "FAILED" and run.data.tags["mlpipe.orphaned"].startswith("true")
    assert [h["version"] for h in promotion_history("m")] == ["1"]


# -- rollback -------------------------------------------------------------------------------------

def test_rollback_points_champion_back_and_records_it(register_tiny_model):
    register_tiny_model("m")
    register_tiny_model("m", fingerprint="sha256:bb")
    set_alias("m", "champion", "2")
    assert rollback("m", "1", reason="v2 misbehaves") == "2"
    assert alias_version("m", "champion") == "1"
    assert MlflowClient().get_model_version("m", "1").tags["promotion.reason"] == "rollback: v2 misbehaves"
    last = promotion_history("m")[-1]
    assert (last["action"], last["version"], last["previous_champion"]) == ("rollback", "1", "2")
    assert last["entry"] == "done"


def test_rollback_to_the_champion_is_refused_and_not_recorded(register_tiny_model):
    register_tiny_model("m")
    set_alias("m", "champion", "1")
    with pytest.raises(RollbackError, match="^v1 is already the champion: nothing to roll back$"):
        rollback("m", "1")
    assert alias_version("m", "champion") == "1" and promotion_history("m") == []


def test_a_rerun_that_kept_the_champion_is_a_no_op_entry():
    assert is_no_op({"action": "champion", "version": "1", "previous_champion": "1"})
    assert not is_no_op({"action": "promote", "version": "2", "previous_champion": "1"})
    assert not is_no_op({"action": "promote", "version": "1", "previous_champion": ""})
    assert not is_no_op({"action": "challenger", "version": "2", "previous_champion": "1"})
    assert not is_no_op({"action": "rollback", "version": "1", "previous_champion": "1"})


def test_rollback_to_a_missing_version_leaves_champion_alone(register_tiny_model):
    register_tiny_model("m")
    set_alias("m", "champion", "1")
    with pytest.raises(RollbackError):
        rollback("m", "9")
    assert alias_version("m", "champion") == "1" and promotion_history("m") == []
