"""mlpipe.tasks.events: the sensor's memory of a prefix and the `mlpipe.dataset.arrived` events, with
Prefect's Variable store and event client replaced by in-memory fakes."""

from __future__ import annotations

import re

import pytest
from prefect.logging import disable_run_logger

from mlpipe.data.sources import ArrivedObject
from mlpipe.tasks import events
from mlpipe.tasks.events import DATASET_ARRIVED, emit_arrivals, find_new_objects, remember_objects, seen_variable


class FakeVariables:
    def __init__(self):
        self.values = {}

    def get(self, name, default=None):
        return self.values.get(name, default)

    def set(self, name, value, overwrite=False):
        assert overwrite
        self.values[name] = value


@pytest.fixture
def variables(monkeypatch) -> FakeVariables:
    fake = FakeVariables()
    monkeypatch.setattr(events, "Variable", fake)
    return fake


def test_seen_variable_is_a_valid_stable_name_per_prefix():
    name = seen_variable("s3://bucket/landing/")
    assert re.fullmatch(r"mlpipe-seen-[0-9a-f]{16}", name)
    assert seen_variable("s3://bucket/landing") == name  # a trailing slash names the same prefix
    assert seen_variable("s3://bucket/other/") != name


def test_emit_arrivals_sends_one_event_per_object_with_the_prefix_label(monkeypatch):
    sent = []
    monkeypatch.setattr(events, "emit_event", lambda **kwargs: sent.append(kwargs))
    arrived = [ArrivedObject("s3://b/in/2026-01.csv", "etag:a", 10, 3), ArrivedObject("s3://b/in/2026-02.csv",
                                                                                       "etag:b", 20, 5)]
    assert emit_arrivals.fn(prefix="s3://b/in/", arrived=arrived) == 2
    assert sent[1] == {"event": DATASET_ARRIVED,
                       "resource": {"prefect.resource.id": "s3://b/in/2026-02.csv",
                                    "prefect.resource.name": "2026-02.csv", "mlpipe.prefix": "s3://b/in/"},
                       "payload": {"size": 20, "fingerprint": "etag:b", "rows": 5}}
    assert emit_arrivals.fn(prefix="s3://b/in/", arrived=[]) == 0 and len(sent) == 2


def test_new_objects_are_found_once_remembered(tmp_path, variables):
    (tmp_path / "a.csv").write_text("x,y\n1,2\n3,4\n")
    prefix = str(tmp_path) + "/"
    with disable_run_logger():
        arrived = find_new_objects.fn(prefix=prefix, patterns=["*.csv"])
        assert [(a.uri, a.rows) for a in arrived] == [(str(tmp_path / "a.csv"), 2)]
        remember_objects.fn(prefix=prefix, arrived=arrived)
        assert find_new_objects.fn(prefix=prefix, patterns=["*.csv"]) == []
        (tmp_path / "a.csv").write_text("x,y\n1,2\n")  # rewritten in place: new again
        assert [a.rows for a in find_new_objects.fn(prefix=prefix, patterns=["*.csv"])] == [1]
    assert variables.values[seen_variable(prefix)] == {str(tmp_path / "a.csv"): arrived[0].fingerprint}
