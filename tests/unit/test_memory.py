"""tasks.memory: freed memory goes back to the OS between steps; live objects are untouched."""

from __future__ import annotations

import numpy as np

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
