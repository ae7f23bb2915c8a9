"""The new-data sensor against a real Prefect server: one event per new object, once."""

from __future__ import annotations

import time

import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from mlpipe.flows.sensors import new_data_sensor

pytestmark = pytest.mark.usefixtures("prefect_server")


def arrival_events(prefix: str, expected: int, timeout: float = 30.0) -> list:
    """Events are sent in the background: poll until `expected` arrived (or time out)."""
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(event=EventNameFilter(name=["mlpipe.dataset.arrived"]),
                                                  resource=EventResourceFilter(labels={"mlpipe.prefix": [prefix]})),
                                      limit=50)
        if len(page.events) >= expected or time.monotonic() > deadline:
            return page.events
        time.sleep(0.5)


def test_sensor_emits_once_per_new_object(tmp_path, small_churn_csv):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "a.csv").write_bytes(small_churn_csv.read_bytes())
    (incoming / "notes.txt").write_text("not a dataset")
    prefix = str(incoming) + "/"

    first = new_data_sensor(prefix=prefix)
    assert first == [str(incoming / "a.csv")]
    events = arrival_events(prefix, 1)
    assert len(events) == 1
    event = events[0]
    assert event.resource.id == str(incoming / "a.csv")
    assert event.payload["rows"] == 1500 and event.payload["size"] == small_churn_csv.stat().st_size
    assert event.payload["fingerprint"].startswith("sha256:")

    assert new_data_sensor(prefix=prefix) == []  # the same object seen twice emits once

    (incoming / "b.csv").write_bytes(small_churn_csv.read_bytes()[:20000].rsplit(b"\n", 1)[0] + b"\n")
    (incoming / "a.csv").write_bytes(small_churn_csv.read_bytes() + b"")  # unchanged content: not new
    assert new_data_sensor(prefix=prefix) == [str(incoming / "b.csv")]
    assert len(arrival_events(prefix, 2)) == 2
    time.sleep(1.0)
    assert len(arrival_events(prefix, 3, timeout=1.0)) == 2
