"""tasks.memory: freed memory goes back to the OS between steps; live objects are untouched;
a table done with keeps its columns and dtypes, not its rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks import memory


def test_release_free_memory_keeps_live_objects():
    kept = np.arange(1_000_000, dtype="float64")
    freed = [np.ones(100_000) for _ in range(20)]
    del freed
    memory.release_free_memory()
    assert kept.sum() == 499999500000.0


def test_release_free_memory_is_a_no_op_without_malloc_trim(monkeypatch):
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    memory.release_free_memory()  # no glibc (musl, macOS): nothing to trim, no error


def test_empty_like_keeps_columns_and_dtypes_and_no_rows():
    frame = pd.DataFrame({"plan": pd.Series(["a", None, "b"], dtype="str"), "tenure": [1, 2, 3],
                          "charges": [1.5, None, 2.0], "flag": [True, False, True],
                          "note": pd.Series(["x", 1, None], dtype=object), "churn": [0, 1, 0]})
    empty = memory.empty_like(frame)
    assert empty.empty and list(empty.columns) == list(frame.columns)
    assert empty.dtypes.to_dict() == frame.dtypes.to_dict()
    pd.testing.assert_frame_equal(empty, frame.iloc[:0], check_index_type=False)


def test_return_freed_memory_keeps_live_objects_and_runs_no_collection(monkeypatch):
    kept = np.arange(1_000_000, dtype="float64")
    freed = [np.ones(100_000) for _ in range(20)]
    del freed
    monkeypatch.setattr(memory.gc, "collect", lambda *a: pytest.fail("a collection inside a step"))
    memory.return_freed_memory()
    assert kept.sum() == 499999500000.0


def test_releaser_collects_only_for_a_table_large_enough_to_matter(monkeypatch):
    collections = []
    monkeypatch.setattr(memory.gc, "collect", lambda *a: collections.append(a) or 0)
    frame = pd.DataFrame({"plan": pd.Series(["month", "year"] * 500, dtype="str"), "tenure": np.arange(1000)})
    size = frame.memory_usage(deep=True).sum()

    monkeypatch.setattr(memory, "RELEASE_ABOVE_BYTES", size)  # not above: a no-op
    memory.releaser(frame)()
    assert collections == []

    monkeypatch.setattr(memory, "RELEASE_ABOVE_BYTES", size - 1)  # above: a collection, then the trim
    memory.releaser(frame)()
    assert len(collections) == 1
