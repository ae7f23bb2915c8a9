"""Prefect events for new data: what a sensor has seen (durably, on the Prefect server) and
the `mlpipe.dataset.arrived` events that trigger retraining."""

from __future__ import annotations

import hashlib

from prefect import get_run_logger, task
from prefect.events import emit_event
from prefect.variables import Variable

from mlpipe.core.retry_policies import IO_RETRIES
from mlpipe.data.reader import count_rows
from mlpipe.data.sources import ArrivedObject, list_datasets, new_objects

DATASET_ARRIVED = "mlpipe.dataset.arrived"


def seen_variable(prefix: str) -> str:
    """The Prefect Variable that remembers one prefix's objects (names: lowercase, digits, -_)."""
    return "mlpipe-seen-" + hashlib.sha256(prefix.rstrip("/").encode()).hexdigest()[:16]


@task(name="list-new-objects", **IO_RETRIES)
def find_new_objects(*, prefix: str, patterns: list[str]) -> list[ArrivedObject]:
    """Objects under `prefix` whose URI + fingerprint the sensor has not seen before."""
    seen = Variable.get(seen_variable(prefix), default={}) or {}
    arrived = []
    for uri, fingerprint, size in new_objects(list_datasets(prefix, tuple(patterns)), seen):
        arrived.append(ArrivedObject(uri=uri, fingerprint=fingerprint, size=size, rows=count_rows(uri)))
    get_run_logger().info("%d new object(s) under %s (%d seen before)", len(arrived), prefix, len(seen))
    return arrived


@task(name="emit-arrivals")
def emit_arrivals(*, prefix: str, arrived: list[ArrivedObject]) -> int:
    """One `mlpipe.dataset.arrived` event per new object; the URI is the resource id and the
    prefix the `mlpipe.prefix` label. The retrain trigger passes the prefix on
    (`{{ event.resource['mlpipe.prefix'] }}`), so the run it starts trains on the newest object
    under it: a burst of files debounced into one run loses none of them to the debounce."""
    for item in arrived:
        emit_event(
            event=DATASET_ARRIVED,
            resource={"prefect.resource.id": item.uri, "prefect.resource.name": item.uri.rsplit("/", 1)[-1],
                      "mlpipe.prefix": prefix},
            payload={"size": item.size, "fingerprint": item.fingerprint, "rows": item.rows},
        )
    return len(arrived)


@task(name="remember-objects")
def remember_objects(*, prefix: str, arrived: list[ArrivedObject]) -> None:
    """Record the emitted objects. This runs after the events are sent: a crash in between
    re-emits on the next run (at least once), which the retrain trigger's window absorbs,
    rather than losing an arrival."""
    name = seen_variable(prefix)
    seen = Variable.get(name, default={}) or {}
    seen.update({item.uri: item.fingerprint for item in arrived})
    Variable.set(name, seen, overwrite=True)
