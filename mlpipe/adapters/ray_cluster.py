"""Every Ray call of the project: connecting, the object store, remote tasks, Ray Train runs.

Connecting is idempotent within a process: the first caller starts a local Ray that listens on
127.0.0.1 only (`_loopback_only`), or joins the cluster at `RAY_ADDRESS`; later callers reuse
it, so one `train` run pays Ray's start-up once for fitting and evaluation. Only a Ray this
module started is shut down (at the end of a `session()` that started it, or at exit), never a
cluster someone else runs.

Errors from Ray come out as `RayJobError`, whose message names the Ray job id and the cause
(a dead worker, a lost node, an exception in the task), so a Prefect task run shows both.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

_lock = threading.Lock()
_started_here = False


class RayJobError(RuntimeError):
    """A Ray task or Ray Train run failed for good (after Ray's own retries)."""

    def __init__(self, job_id: str, what: str, cause: BaseException, detail: str = ""):
        self.job_id, self.cause = job_id, cause
        super().__init__(f"Ray job {job_id}: {what} failed: {type(cause).__name__}: {_message(cause)}{detail}")


def _message(error: BaseException, limit: int = 2000) -> str:
    """The error's whole message (its tail kept where it is long: the cause is at the end)."""
    text = str(error).strip()
    if not text:
        return "no message"
    return text if len(text) <= limit else "..." + text[-limit:]


@dataclass(frozen=True)
class RaySession:
    """Where this process is connected: the job id, the cluster address, the dashboard."""

    job_id: str
    address: str
    dashboard_url: str | None
    started_here: bool

    def tags(self) -> dict[str, str]:
        """MLflow tags for a run that used Ray."""
        tags = {"mlpipe.ray_job_id": self.job_id, "mlpipe.ray_address": self.address}
        if self.dashboard_url:
            tags["mlpipe.ray_dashboard_url"] = self.dashboard_url
        return tags


def connect(num_cpus: int | None = None) -> RaySession:
    """Join the cluster at `RAY_ADDRESS`, else start a local Ray on loopback only with `num_cpus`
    (default: all cores) and no dashboard. A second call reuses the connection."""
    import ray

    global _started_here
    with _lock:
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                with _loopback_only():
                    # "local": a Ray of its own, never the one `ray start` last wrote down in
                    # /tmp/ray/ray_current_cluster (Ray's default joins it, or fails when it is gone)
                    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                             log_to_driver=False, _node_ip_address="127.0.0.1")
                _started_here = True
                atexit.register(shutdown)
        return current_session()


# Ray's switch for a one-machine Ray (its default on macOS and Windows): the node address is loopback.
LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def _loopback_only():
    """While a local Ray starts: every server it starts listens on 127.0.0.1 only.

    Ray rewrites a node address of 127.0.0.1 to the machine's routable address
    (`services.resolve_ip_for_localhost`), and its GCS, raylet and workers then listen on every
    interface, with no authentication. With clusters off (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`,
    what Ray does on macOS/Windows) the node address stays loopback, and its servers bind it alone.
    Ray reads the variable when it is imported, so its constant is set as well; both are put back
    once the processes have started (they keep the variable), so joining a cluster through
    RAY_ADDRESS later in this process is not affected."""
    from ray._private import ray_constants

    before_env, before_flag = os.environ.get(LOOPBACK_VARIABLE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_VARIABLE] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_flag
        if before_env is None:
            os.environ.pop(LOOPBACK_VARIABLE, None)
        else:
            os.environ[LOOPBACK_VARIABLE] = before_env


def current_session() -> RaySession:
    """The connected session's identity (call after `connect`)."""
    import ray

    context = ray.get_runtime_context()
    dashboard = ray.get_dashboard_url() if hasattr(ray, "get_dashboard_url") else None
    # The address the user gave (RAY_ADDRESS) names the cluster as they know it; Ray's own GCS
    # address may be another interface of the same head node.
    address = str(context.gcs_address) if _started_here else os.environ.get("RAY_ADDRESS") or str(context.gcs_address)
    return RaySession(job_id=str(context.get_job_id()), address=address,
                      dashboard_url=f"http://{dashboard}" if dashboard else None, started_here=_started_here)


def ray_session_tags() -> dict[str, str]:
    """MLflow tags of the connected Ray session (empty when not connected)."""
    import ray

    return current_session().tags() if ray.is_initialized() else {}


def is_ray_system_failure(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry a task when Ray itself gave up (a worker or node lost
    beyond Ray's own retries), not when the user's code raised."""
    try:
        state.result()
    except RayJobError as error:
        return _is_ray_error(error.cause)
    except Exception:
        return False
    return False


def shutdown() -> None:
    """Stop the Ray this process started; a cluster joined through RAY_ADDRESS is only left."""
    import ray

    global _started_here
    with _lock:
        if ray.is_initialized():
            ray.shutdown()
        _started_here = False


@contextmanager
def session(num_cpus: int | None = None):
    """`connect()` for the block; shuts down at the end only if this block started Ray."""
    import ray

    fresh = not ray.is_initialized()
    info = connect(num_cpus)
    try:
        yield info
    finally:
        if fresh and info.started_here:
            shutdown()


def put(value: Any):
    """Put `value` in the object store once; pass the reference to many tasks."""
    import ray

    return ray.put(value)


def run_tasks(fn: Callable, calls: Iterable[tuple], *, shared: dict[str, Any] | None = None,
              num_cpus: float = 1, max_retries: int = 2, what: str | None = None) -> list:
    """Run `fn(*call, **shared)` as one Ray task per call, in order of `calls`.

    `shared` values are put in the object store once and reach every task as the same object
    (Ray resolves top-level references), instead of being serialized into each task.
    A task whose worker dies is retried `max_retries` times by Ray; an exception raised by
    `fn` is not retried (it would fail the same way) and comes out as `RayJobError`."""
    import ray

    info = connect()
    remote = ray.remote(num_cpus=num_cpus, max_retries=max_retries)(fn)
    refs_shared = {key: value if isinstance(value, ray.ObjectRef) else ray.put(value)
                   for key, value in (shared or {}).items()}
    try:
        return ray.get([remote.remote(*call, **refs_shared) for call in calls])
    except Exception as error:
        raise RayJobError(info.job_id, what or getattr(fn, "__name__", "task"), _unwrap(error)) from error


def _unwrap(error: BaseException) -> BaseException:
    """The user's exception inside a RayTaskError; Ray's own errors (a dead worker, a lost node) as they are."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


@dataclass
class TrainRun:
    """A finished Ray Train run: Ray Train's `Result` (its `checkpoint` is the last one), its
    name and storage path, and why each restart was needed (empty when none was)."""

    result: Any
    name: str
    storage_path: str
    restarts: list[str]

    def tags(self) -> dict[str, str]:
        """MLflow tags of a model this run trained."""
        return {"mlpipe.ray_train_run": self.name, "mlpipe.ray_train_storage_path": self.storage_path,
                "mlpipe.ray_train_restarts": str(len(self.restarts))}


def user_error(error: BaseException) -> tuple[int, BaseException] | None:
    """(worker rank, the user's exception) when every worker of a failed Ray Train run failed in
    the training function itself (a ValueError, say): running it again would fail the same way.
    None when Ray lost a worker (a died or unresponsive worker, a lost node); the surviving
    workers' collateral errors (a broken collective) do not count as the user's then."""
    failures = {rank: getattr(failure, "_base_exc", failure)  # a UserExceptionWithTraceback: the user's own
                for rank, failure in (getattr(error, "worker_failures", None) or {}).items()}
    if not failures or any(_is_ray_error(failure) for failure in failures.values()):
        return None
    rank = min(failures)
    return rank, failures[rank]


def _is_ray_error(error: BaseException) -> bool:
    """Raised by Ray itself (a dead actor, a failed health check, a lost node), not by user code."""
    return type(error).__module__.split(".")[0] == "ray"


def run_training(make_trainer: Callable[[], Any], *, name: str, storage_path: str, max_failures: int) -> TrainRun:
    """`make_trainer().fit()` (a Ray Train trainer whose RunConfig has this `name` and
    `storage_path`, and no restarts of its own), restarted up to `max_failures` times when Ray
    lost a worker: the new run resumes from the latest checkpoint under storage_path/name. An
    error of the training function itself is not retried: `RayJobError` with that exception as
    its `cause`, its message in full, and the worker's rank."""
    info = connect()
    restarts: list[str] = []
    while True:
        try:
            result = make_trainer().fit()
        except Exception as error:
            user = user_error(error)
            if user is not None:
                rank, cause = user
                raise RayJobError(info.job_id, f"Ray Train run {name!r}", cause,
                                  f" (worker rank {rank}; not retried)") from error
            if len(restarts) >= max_failures:
                raise RayJobError(info.job_id, f"Ray Train run {name!r}", _unwrap(error),
                                  f" (after {len(restarts)} restart(s); storage {storage_path})") from error
            restarts.append(f"{type(error).__name__}: {_message(error, 300)}")
            log.warning("Ray Train run %r lost a worker; restart %d of %d from the latest checkpoint under %s: %s",
                        name, len(restarts), max_failures, storage_path, restarts[-1])
            continue
        if getattr(result, "error", None):
            raise RayJobError(info.job_id, f"Ray Train run {name!r}", result.error)
        return TrainRun(result, name, storage_path, restarts)


def run_torch_training(train_fn: Callable[[dict], None], config: dict, *, num_workers: int, use_gpu: bool,
                       storage_path: str, name: str, max_failures: int = 2) -> TrainRun:
    """A data-parallel Ray Train run of `train_fn(config)` on `num_workers` workers (`run_training`).

    Each worker checkpoints with `ray.train.report(..., checkpoint=...)` (the last two are kept);
    after a lost worker the run starts again and `train_fn` resumes from `latest_checkpoint()`."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # Ray Train's controller takes a worker's report when it polls, every 2 s by default, and a
    # worker holds at most one untaken report: per-epoch reports of short epochs would wait for
    # the poll. Ray propagates this variable from the driver to the controller.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

    def make_trainer():
        return TorchTrainer(
            train_fn, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
            run_config=RunConfig(name=name, storage_path=storage_path, failure_config=FailureConfig(max_failures=0),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)))

    return run_training(make_trainer, name=name, storage_path=storage_path, max_failures=max_failures)


def run_booster_training(library: str, train_fn: Callable[[dict], None], config: dict, frames: dict[str, Any], *,
                         num_workers: int, use_gpu: bool, storage_path: str, name: str,
                         max_failures: int = 2, cpus_per_worker: float = 1.0,
                         whole: tuple[str, ...] = ()) -> TrainRun:
    """A data-parallel Ray Train run of XGBoost or LightGBM (`library`) on `num_workers` workers,
    each running `train_fn(config)` on its shard of each Ray Dataset (`frames`: name -> a pandas
    frame, put in the object store in blocks, or a Ray Dataset read from the source). The
    libraries' own collectives (XGBoost's, LightGBM's network) are set up by the trainer;
    `run_training` restarts it when Ray lost a worker. The last two checkpoints are kept.
    `cpus_per_worker` below 1 leaves CPUs to the Ray Data tasks that read a Dataset's blocks
    while the workers wait for them (on a cluster with a CPU per worker, they would wait forever).
    `whole` names the Datasets every worker reads whole instead of a shard of (LightGBM's
    validation rows: its workers evaluate locally, so each must see the same rows to stop at the
    same round)."""
    import ray.data
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig

    if library == "xgboost":
        from ray.train.xgboost import XGBoostTrainer as Trainer
    elif library == "lightgbm":
        from ray.train.lightgbm import LightGBMTrainer as Trainer
    else:
        raise ValueError(f"no Ray Train trainer for {library!r} (xgboost, lightgbm)")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # as for run_torch_training
    connect()
    datasets = {key: frame if isinstance(frame, ray.data.Dataset) else ray.data.from_pandas(frame)
                for key, frame in frames.items()}

    def make_trainer():
        return Trainer(train_fn, train_loop_config=config, datasets=datasets,
                       dataset_config=DataConfig(datasets_to_split=[key for key in datasets if key not in whole]),
                       scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                                    resources_per_worker={"CPU": cpus_per_worker}),
                       run_config=RunConfig(name=name, storage_path=storage_path,
                                            failure_config=FailureConfig(max_failures=0),
                                            checkpoint_config=CheckpointConfig(num_to_keep=2)))

    return run_training(make_trainer, name=name, storage_path=storage_path, max_failures=max_failures)


# -- helpers for code running inside a Ray Train worker ---------------------------------------

def dataset_shard_chunks(name: str, label: str) -> list[tuple[Any, Any]]:
    """This worker's shard of the Ray Dataset `name` as (features, label) float32 arrays, one pair
    per batch as the batches stream in: never materialized in the object store (a shard of a
    table bigger than a node's store would spill to disk), never gathered into one frame (that
    held the shard twice, in float64, while it was concatenated). float32 is what both libraries
    bin and train on; the columns other than `label` keep the Dataset's order."""
    import numpy as np
    import ray.train

    chunks = []
    for batch in ray.train.get_dataset_shard(name).iter_batches(batch_format="numpy", batch_size=65_536):
        features = np.column_stack([batch[column] for column in batch if column != label]).astype("float32")
        chunks.append((features, np.asarray(batch[label], dtype="float32")))
    return chunks


def booster_report_callback(library: str, frequency: int):
    """The library's Ray Train callback, reporting (with a checkpoint) every `frequency` rounds and
    at the end only: Ray's own reports every round as well, and each report waits for the
    controller to take the last one (60 rounds took 60 s on 5,000 rows)."""
    if library == "xgboost":
        from ray.train.xgboost import RayTrainReportCallback
    else:
        from ray.train.lightgbm import RayTrainReportCallback

    class CheckpointedRoundsOnly(RayTrainReportCallback):
        def _report_metrics(self, report_dict):
            pass

    return CheckpointedRoundsOnly(frequency=frequency)


def report_final_lightgbm(booster) -> None:
    """Report `booster` as the run's last checkpoint, as the report callback saves one (rank 0
    saves it; every worker reports, as Ray Train asks). LightGBM's early stopping ends training
    before the callback's end-of-training checkpoint, so the run's last checkpoint would be the
    last periodic one, before or past the best round; a booster that stopped early saves up to its
    best iteration."""
    import tempfile

    import ray.train
    from ray.train.lightgbm import RayTrainReportCallback

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if ray.train.get_context().get_world_rank() in (0, None):
            booster.save_model(os.path.join(folder, RayTrainReportCallback.CHECKPOINT_NAME))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({}, checkpoint=checkpoint)


def booster_from_checkpoint(library: str, checkpoint):
    """The library's booster a report callback saved in `checkpoint` (None: no checkpoint)."""
    if checkpoint is None:
        return None
    if library == "xgboost":
        from ray.train.xgboost import RayTrainReportCallback
    else:
        from ray.train.lightgbm import RayTrainReportCallback
    return RayTrainReportCallback.get_model(checkpoint)


def latest_booster(library: str):
    """Inside a worker: the booster of the checkpoint to resume from, or None."""
    import ray.train

    return booster_from_checkpoint(library, ray.train.get_checkpoint())


def lightgbm_network_params() -> dict:
    """Inside a LightGBM worker: the network parameters that join it to the others."""
    import ray.train.lightgbm

    return ray.train.lightgbm.get_network_params()


def worker_rank() -> tuple[int, int]:
    """(world rank, world size) of this Ray Train worker."""
    import ray.train

    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size()


def prepare_model(network):
    """Wrap the network for data-parallel training (DDP) on this worker's device."""
    import ray.train.torch

    return ray.train.torch.prepare_model(network)


def train_device() -> str:
    import ray.train.torch

    return str(ray.train.torch.get_device())


def latest_checkpoint_dir():
    """A context manager yielding the folder of the checkpoint to resume from, or None."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    return checkpoint.as_directory() if checkpoint is not None else _null_context()


@contextmanager
def _null_context():
    yield None


def report(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
    """Report one epoch's metrics to Ray Train, with the checkpoint folder (rank 0 gives one)."""
    import ray.train

    checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    ray.train.report(metrics, checkpoint=checkpoint)


def get(ref):
    """The value behind an object reference (inside a worker)."""
    import ray

    return ray.get(ref)
