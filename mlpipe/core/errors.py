"""Errors the pipeline raises on purpose: deterministic, never retried, each naming what is wrong."""

from __future__ import annotations


class DataValidationError(ValueError):
    """The data breaks the contract; the message names the column and what is wrong."""

    def __init__(self, message: str, column: str | None = None):
        super().__init__(message)
        self.column = column


class DatasetError(ValueError):
    """The dataset cannot be read as a table (missing, unreadable, wrong format)."""



def name_list(names, limit: int = 8, width: int = 24) -> str:
    """A few names for an error line: at most `limit`, each cut to `width` characters in the
    middle, where long names that share a prefix still show how they differ."""
    names = [str(name) for name in names]
    tail = (width - 3) // 2
    shown = [name if len(name) <= width else name[:width - 3 - tail] + "..." + name[-tail:] for name in names[:limit]]
    more = f", ... {len(names) - limit} more" if len(names) > limit else ""
    return "[" + ", ".join(repr(name) for name in shown) + more + "]"

