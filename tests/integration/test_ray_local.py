"""Ray as a local compute backend, on one local Ray the tests share: CV evaluation on it equals
the local backend, a task's error names the job, a task whose worker died is retried, and a Ray
Train worker killed mid-run resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for this module's tests (ray.init takes ~4 s, its shutdown ~1.5 s:
    once, not per test), shut down after the last of them. The tests that kill Ray's workers come
    last: Ray replaces a dead worker, and the session goes on."""
    from mlpipe.adapters import ray_cluster

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RAY_ADDRESS", raising=False)
        with ray_cluster.session(num_cpus=2) as session:
            assert session.started_here
            yield session


def listening_sockets(root_pid: int) -> list[tuple[str, str]]:
    """(local address, process) of every TCP socket listening in `root_pid`'s process tree, from `ss -ltnp`."""
    import shutil
    import subprocess

    assert shutil.which("ss"), "this test reads listening sockets with `ss` (iproute2)"
    tree = _process_tree(root_pid)
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True, timeout=30).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        pids = {int(pid) for pid in re.findall(r"pid=(\d+)", fields[-1])}
        if pids & tree:
            found.append((fields[3], fields[-1]))
    return found


def _process_tree(root_pid: int) -> set[int]:
    """`root_pid` and its descendants, from each process's parent in /proc/<pid>/stat."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grown = {root_pid}, True
    while grown:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grown = bool(found)
    return tree


def test_the_local_ray_ignores_the_cluster_ray_start_last_wrote_down():
    """`ray start` writes its address to <Ray's temp dir>/ray_current_cluster, and a plain
    `ray.init()` joins that cluster, or fails when it is gone (a stale file after a reboot or a
    killed head). With no RAY_ADDRESS, mlpipe starts a Ray of its own regardless."""
    import shutil
    import subprocess
    import sys
    import tempfile

    folder = tempfile.mkdtemp(prefix="r", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    try:
        (Path(folder) / "ray").mkdir()
        (Path(folder) / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")  # nothing listens there
        code = ("from mlpipe.adapters import ray_cluster as rc\n"
                "with rc.session(num_cpus=1) as s:\n"
                "    print('started', s.started_here, s.address.split(':')[0], rc.run_tasks(lambda x: abs(x), [(-3,)]))")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": folder}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180,
                              check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "started True 127.0.0.1 [3]" in done.stdout, done.stdout
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_local_ray_listens_on_loopback_only(local_ray):
    """Every server of the Ray this project starts (GCS, raylet, object manager, workers) binds
    127.0.0.1: nothing is reachable from another machine. Ray alone rewrites 127.0.0.1 to the
    routable address and listens on every interface."""
    from mlpipe.adapters.ray_cluster import run_tasks

    assert run_tasks(lambda x: abs(x), [(-1,), (-2,)]) == [1, 2]  # workers up, listening too
    sockets = listening_sockets(os.getpid())
    gcs_port = local_ray.address.rsplit(":", 1)[1]
    assert local_ray.address.startswith("127.0.0.1:")
    assert any(address.endswith(f":{gcs_port}") and "gcs_server" in process for address, process in sockets)
    assert len({process.split('"')[1] for _, process in sockets}) >= 3  # gcs_server, raylet, workers
    exposed = [(address, process) for address, process in sockets
               if address.rsplit(":", 1)[0] not in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]")]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"


def test_cv_and_permutation_importance_on_local_ray_equal_the_local_backend(fast_config, local_ray):
    from mlpipe.core.config import ComputeConfig
    from mlpipe.stages.evaluation import evaluate_model
    from mlpipe.stages.preparation import prepare_rows
    from mlpipe.stages.training import fit_model

    config = fast_config("model.family=logistic_regression")
    train, holdout, spec, preprocessor, _ = prepare_rows(config)
    model = fit_model(train, "churn", spec, preprocessor, config.model)
    local = evaluate_model(model, train, holdout, "churn", spec, config.evaluation, 42, ComputeConfig())
    on_ray = evaluate_model(model, train, holdout, "churn", spec, config.evaluation, 42,
                            ComputeConfig(backend="ray"))
    assert on_ray.metrics == local.metrics  # exact: the same unit functions with the same seeds
    assert on_ray.importances == local.importances
    assert local.metrics["cv_roc_auc_mean"] > 0.75 and local.tags == {}
    assert on_ray.tags["mlpipe.ray_job_id"] == local_ray.job_id


def test_a_task_error_on_ray_names_the_job_and_the_cause(local_ray):
    from mlpipe.adapters.ray_cluster import RayJobError, run_tasks

    with pytest.raises(RayJobError, match=rf"Ray job {local_ray.job_id}: .*ZeroDivisionError"):
        run_tasks(lambda a, b: a / b, [(1, 0)], max_retries=0, what="a division")


def test_an_error_in_the_training_code_of_a_ray_train_worker_is_not_retried_and_names_its_cause(tmp_path, local_ray):
    """A ValueError in the training function fails the same way every time: one attempt per worker,
    not max_failures more, and the error says what it was (type, whole message, rank); Prefect's
    retry condition does not take it for a Ray failure."""
    pytest.importorskip("torch", reason="Ray Train's TorchTrainer needs the torch extra")
    from types import SimpleNamespace

    from mlpipe.adapters.ray_cluster import RayJobError, is_ray_system_failure, run_torch_training

    attempts = tmp_path / "attempts"

    def fails(config):  # defined here, so Ray ships it by value
        with open(config["attempts"], "a") as out:
            out.write("attempt\n")
        raise ValueError("column 'tenure' holds text\nsecond line of the message")

    with pytest.raises(RayJobError) as raised:
        run_torch_training(fails, {"attempts": str(attempts)}, num_workers=2, use_gpu=False,
                           storage_path=str(tmp_path / "store"), name="fails-once", max_failures=2)
    # each worker at most once: no restart (Ray may stop the group before the second one ran it)
    assert 1 <= attempts.read_text().count("attempt") <= 2
    assert isinstance(raised.value.cause, ValueError)
    # both ranks fail alike; the lowest whose failure Ray saw before stopping the group is named
    assert re.search(r"ValueError: column 'tenure' holds text\nsecond line of the message \(worker rank [01]; "
                     r"not retried\)", str(raised.value)), str(raised.value)
    failed = SimpleNamespace(result=lambda: (_ for _ in ()).throw(raised.value))
    assert is_ray_system_failure(None, None, failed) is False


def test_data_parallel_workers_hold_the_same_weights_after_every_epoch(tmp_path, local_ray):
    """DDP (`prepare_model`) keeps the replicas in step: each epoch every worker all-reduces its
    weights' extremes, and the largest difference must be 0. Workers training apart (no DDP)
    would each fit their own rows and drift apart at once."""
    pytest.importorskip("torch", reason="the mlp family needs the torch extra")
    from mlpipe.model.mlp import MLPNetClassifier

    rng = np.random.default_rng(1)
    X = rng.normal(size=(2_000, 6)).astype("float32")
    y = (X[:, 0] - X[:, 2] + rng.normal(0, 1, len(X)) > 0).astype(int)
    model = MLPNetClassifier(hidden_layers=[16], epochs=3, patience=None, num_workers=2,
                             storage_path=str(tmp_path)).fit(X, y)
    assert [row["epoch"] for row in model.history_] == [1, 2, 3]
    assert [row["replica_weight_spread"] for row in model.history_] == [0.0, 0.0, 0.0]
    assert model.ray_train_run_["mlpipe.ray_train_restarts"] == "0"
    assert len(list(tmp_path.rglob("state.json"))) == 2  # CheckpointConfig(num_to_keep=2) of 3 epochs


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_boosters_train_data_parallel_on_ray_train_as_well_as_in_process(family, tmp_path, local_ray):
    """num_workers=2: Ray Train's XGBoostTrainer / LightGBMTrainer, each worker on its shard of a
    Ray Dataset; the fitted estimator is the same kind of object (the library's own model format)
    and scores within 0.005 roc_auc of the in-process fit on the same rows."""
    from sklearn.metrics import roc_auc_score

    from mlpipe.core.families import make_estimator

    rng = np.random.default_rng(0)
    X = rng.normal(size=(30_000, 6))
    y = (X[:, 0] - X[:, 1] + X[:, 2] * X[:, 3] + rng.normal(0, 1, len(X)) > 0).astype(int)
    params = {"n_estimators": 60, "n_jobs": 1}
    local = make_estimator(family, params, seed=0).fit(X[:20_000], y[:20_000])
    on_ray = make_estimator(family, {**params, "num_workers": 2, "storage_path": str(tmp_path)}, seed=0)
    on_ray.fit(X[:20_000], y[:20_000])
    assert type(on_ray.booster_) is type(local.booster_) and on_ray.best_iteration_ == 59
    auc = {name: roc_auc_score(y[20_000:], model.predict_proba(X[20_000:])[:, 1])
           for name, model in (("local", local), ("ray", on_ray))}
    assert auc["ray"] > 0.85 and abs(auc["ray"] - auc["local"]) < 0.005, auc
    assert on_ray.ray_job_id_ == local_ray.job_id and local.ray_job_id_ == ""
    assert on_ray.ray_train_run_["mlpipe.ray_train_restarts"] == "0"
    assert on_ray.ray_train_run_["mlpipe.ray_train_run"].startswith(f"{family}-")
    assert 1 <= len([p for p in tmp_path.rglob("checkpoint_*") if p.is_dir()]) <= 2  # num_to_keep=2


@pytest.mark.parametrize("family", ["xgboost", "lightgbm"])
def test_boosters_stop_early_on_ray_train_and_keep_the_best_round(family, tmp_path, local_ray):
    """early_stopping_rounds with num_workers: XGBoost's workers evaluate their validation shards
    (all-reduced), LightGBM's each read the validation rows whole, so all stop at the same round.
    The model kept is cut at the best round: for LightGBM the run's last checkpoint is reported
    after its early stop (its callback's end-of-training one never comes)."""
    from sklearn.metrics import roc_auc_score

    from mlpipe.core.families import make_estimator

    rng = np.random.default_rng(1)
    X = rng.normal(size=(12_000, 6))
    y = (X[:, 0] - X[:, 1] + rng.normal(0, 1.5, len(X)) > 0).astype(int)
    params = {"n_estimators": 400, "learning_rate": 0.3, "early_stopping_rounds": 5, "n_jobs": 1}
    local = make_estimator(family, params, seed=0).fit(X[:9000], y[:9000])
    on_ray = make_estimator(family, {**params, "num_workers": 2, "storage_path": str(tmp_path)}, seed=0)
    on_ray.fit(X[:9000], y[:9000])
    assert on_ray.best_iteration_ < 100  # stopped long before 400 rounds
    if family == "xgboost":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(bytearray(on_ray.booster_))
        assert booster.num_boosted_rounds() == on_ray.best_iteration_ + 1
    else:
        import lightgbm

        assert lightgbm.Booster(model_str=on_ray.booster_).num_trees() == on_ray.best_iteration_ + 1
    auc = {name: roc_auc_score(y[9000:], model.predict_proba(X[9000:])[:, 1])
           for name, model in (("local", local), ("ray", on_ray))}
    assert abs(auc["ray"] - auc["local"]) < 0.01, auc


def test_ray_retries_a_task_whose_worker_died_and_names_the_job_when_it_gives_up(tmp_path, local_ray):
    from mlpipe.adapters.ray_cluster import RayJobError, run_tasks

    marker = str(tmp_path / "died-once")

    def dies_once(value):  # defined here, so Ray ships it by value
        import os
        import signal

        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return value * 2

    assert run_tasks(dies_once, [(21,)], max_retries=1) == [42]  # the retry ran on a fresh worker

    def always_dies(value):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(RayJobError, match=rf"Ray job {local_ray.job_id}: always_dies failed: WorkerCrashedError"):
        run_tasks(always_dies, [(1,)], max_retries=0)


def _train_worker_pids() -> list[int]:
    """Ray Train worker processes of this process's local Ray (its descendants: another test
    process's Ray may be training at the same time), by the process title Ray gives them."""
    pids, ours = [], _process_tree(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) not in ours:
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::") and "TrainWorker" in title:
            pids.append(int(entry.name))
    return pids


def test_a_killed_ray_train_worker_resumes_from_the_last_checkpoint(tmp_path, local_ray):
    pytest.importorskip("torch", reason="the mlp family needs the torch extra")
    from mlpipe.model.mlp import MLPNetClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(10_000, 8)).astype("float32")
    y = (X[:, 0] + X[:, 1] + rng.normal(0, 1, len(X)) > 0).astype(int)
    storage = tmp_path / "ray-train"
    model = MLPNetClassifier(hidden_layers=[32], epochs=15, patience=None, num_workers=2, max_failures=2,
                             storage_path=str(storage))
    outcome: dict = {}
    fitting = threading.Thread(target=lambda: outcome.update(model=_capture(model.fit, X, y)), daemon=True)
    fitting.start()
    deadline = time.monotonic() + 120
    # A worker holds one report until Ray Train's controller takes it: once the third epoch's
    # checkpoint is stored, the first is registered, so a restarted run has one to resume from.
    while _last_checkpointed_epoch(storage) < 3:
        assert fitting.is_alive() and time.monotonic() < deadline, f"no checkpoint came: {outcome}"
        time.sleep(0.2)
    workers = _train_worker_pids()
    assert len(workers) == 2, workers
    killed_at = time.time()
    os.kill(workers[1], signal.SIGKILL)
    fitting.join(timeout=150)
    assert not fitting.is_alive()
    assert not isinstance(outcome["model"], BaseException), outcome["model"]
    assert model.resumed_at_epochs_ and 1 <= model.resumed_at_epochs_[0] < 15  # went on after a checkpoint
    assert [row["epoch"] for row in model.history_] == list(range(1, 16))  # each epoch exactly once
    assert model.history_[-1]["val_roc_auc"] > 0.8
    assert model.ray_train_run_["mlpipe.ray_train_restarts"] == "1" and len(model.ray_train_run_["restart_causes"]) == 1
    assert model.ray_train_run_["mlpipe.ray_train_storage_path"] == str(storage.resolve())
    run_folder = storage / model.ray_train_run_["mlpipe.ray_train_run"]
    # CheckpointConfig(num_to_keep=2) in the run that finished: of the checkpoints written after the
    # restart (seconds after the kill), the last two epochs are left. The lost run's own may also be
    # there, as many as it stored but never registered: that depends on the controller's lag.
    after_restart = [json.loads(path.read_text())["epoch"] for path in run_folder.rglob("state.json")
                     if path.stat().st_mtime > killed_at + 2]
    assert sorted(after_restart) == [14, 15], after_restart


def _last_checkpointed_epoch(storage: Path) -> int:
    epochs = [0]
    for path in storage.rglob("state.json"):
        try:
            epochs.append(json.loads(path.read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            continue  # being written
    return max(epochs)


def _capture(fn, *args):
    try:
        return fn(*args)
    except BaseException as error:  # noqa: BLE001  (handed to the test thread)
        return error
