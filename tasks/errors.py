"""Errors the pipeline raises on purpose: deterministic, never retried, each naming what is wrong."""

from __future__ import annotations


class DataValidationError(ValueError):
    """The data breaks the contract; the message names the column and what is wrong."""

    def __init__(self, message: str, column: str | None = None):
        super().__init__(message)
        self.column = column
