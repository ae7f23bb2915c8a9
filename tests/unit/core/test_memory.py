"""mlpipe.core.memory: freed memory goes back to the OS between steps; live objects are untouched;
a table done with keeps its columns and dtypes, not its rows."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow
import pytest

from mlpipe.core import memory


@pytest.mark.skipif(memory._malloc_trim() is None or not os.path.exists("/proc/self/statm"),
                    reason="glibc's malloc_trim and /proc: Linux with glibc")
def test_release_free_memory_hands_freed_heap_back_and_keeps_live_objects():
    """200 MB in blocks below malloc's mmap threshold live on the heap; each is followed by a
    small block that stays, so once they are freed glibc cannot shrink the heap from its top and
    keeps them, until the release hands their pages back. In a fresh interpreter: after other
    tests, this process's heap (which arena its thread uses, what else frees or trims it) is not
    the state the test needs."""
    done = subprocess.run([sys.executable, "-c", HEAP_CHECK], capture_output=True, text=True, check=False,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


HEAP_CHECK = """
import os
from mlpipe.core import memory

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

blocks, kept = [], []
for _ in range(3200):
    blocks.append(bytearray(b"x" * (64 * 1024)))  # 64 KiB, written: resident
    kept.append(bytearray(b"k" * 1024))
before = rss()
del blocks
held = rss()
memory.release_free_memory()
after = rss()
assert held > before - 50 * 2**20, ("glibc handed the blocks back by itself: nothing left to test", before, held)
assert after < held - 100 * 2**20, (before, held, after)
assert all(block == b"k" * 1024 for block in kept)
"""


def test_release_free_memory_without_malloc_trim_still_collects_and_releases_pyarrow(monkeypatch):
    """No glibc (musl, macOS): no trim, but the collection and pyarrow's pool still run."""
    calls = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    monkeypatch.setattr(memory.gc, "collect", lambda *a: calls.append("collect") or 0)
    pool = pyarrow.default_memory_pool()
    monkeypatch.setattr(pyarrow, "default_memory_pool", lambda: SimpleNamespace(
        release_unused=lambda: calls.append("pyarrow") or pool.release_unused()))
    memory.release_free_memory()
    assert calls == ["collect", "pyarrow"]


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
