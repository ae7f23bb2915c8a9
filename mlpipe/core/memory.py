"""Letting go of memory between the heavy steps of a run: a table whose rows are done with
(`empty_like`), and what the process freed, handed back to the operating system.

A Prefect-free kernel module. glibc's malloc keeps what a step freed (a validated table's
temporaries, a fit's transformed matrix) for reuse, and pyarrow's pool keeps freed string
buffers: the process's resident memory then stays at the step's high-water mark, and the next
step's large arrays (which malloc maps anew) come on top of it. Releasing it between steps
changes no result, only how much memory the run holds at its peak.

What is freed first has to be garbage the collector knows: a table that a reference cycle
still holds (Prefect's task states, futures and tracebacks make such cycles) stays in memory
until the cyclic collector next runs, which may be in the middle of the next step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable

import pandas as pd

# Below this much table in memory, what a step frees is not worth a collection: a full
# collection walks every object the process holds, 0.3-0.5 s per call in a process that runs
# flows in-process (a notebook, a test session, a served flow), ~2 s of a ~6 s train on the sample.
# The `mlpipe` commands freeze their imports out of the collector's reach, where it costs 10-20 ms.
RELEASE_ABOVE_BYTES = 64 * 2**20


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_free_memory() -> None:
    """Collect unreachable reference cycles, then give memory the process has freed back to the
    OS: glibc's free lists and pyarrow's pool. Objects still referenced are untouched."""
    gc.collect()
    return_freed_memory()


def _keep_free_memory() -> None:
    """What `releaser` gives for a table too small for a release to matter."""


def releaser(frame: pd.DataFrame) -> Callable[[], None]:
    """`release_free_memory` for a run on `frame` if the table takes more than
    `RELEASE_ABOVE_BYTES` in memory, else a function that does nothing."""
    if frame.memory_usage(deep=True).sum() > RELEASE_ABOVE_BYTES:
        return release_free_memory
    return _keep_free_memory


def release_before_step(frame: pd.DataFrame) -> None:
    """The first thing a heavy step of a run on `frame` does: what the steps before it freed
    (their temporaries, and the finished task runs whose reference cycles still hold parts of
    the table) goes back to the OS, for a table large enough for it to matter (`releaser`)."""
    releaser(frame)()


def return_freed_memory() -> None:
    """Give what the process has already freed back to the OS (glibc's free lists, pyarrow's
    pool), without a collection: for use inside a step, between two passes over large arrays
    (numpy frees an array when its last reference goes)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    try:
        import pyarrow
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return
    pyarrow.default_memory_pool().release_unused()


def empty_like(frame: pd.DataFrame) -> pd.DataFrame:
    """No rows, the same columns and dtypes, and no memory shared with `frame` (an `iloc[:0]`
    view would keep the whole table alive)."""
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in frame.dtypes.items()},
                        columns=frame.columns)
