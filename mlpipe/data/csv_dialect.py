"""CSV dialect detection: the delimiter, decimal mark and encoding of a CSV file, from its first
bytes or from `data.csv`. Prefect-free; the reader in mlpipe/data/reader.py calls it once per file."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mlpipe.core.config import CSV_DELIMITERS, CsvConfig
from mlpipe.core.errors import DatasetError

SAMPLE_BYTES = 64 << 10  # the head that dialect detection looks at
_SAMPLE_LINES = 50
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


@dataclass(frozen=True)
class CsvDialect:
    """How a CSV file is written: found by detection or taken from `data.csv`."""

    delimiter: str
    decimal: str = "."
    encoding: str = "utf-8"
    bom: bool = False  # the file starts with a byte-order mark (which then names the encoding)
    detected: bool = True  # the delimiter was detected, not configured

    @property
    def codec(self) -> str:
        """The Python codec that decodes the file (and drops its byte-order mark)."""
        return "utf-8-sig" if self.bom and codecs.lookup(self.encoding).name == "utf-8" else self.encoding

    def describe(self) -> str:
        delimiter = _DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))
        return (f"{delimiter}-delimited ({'detected' if self.detected else 'configured'}), decimal "
                f"{self.decimal!r}, {self.encoding}{' with a byte-order mark' if self.bom else ''}")



def undecodable_message(uri: str, encoding: str, where: str) -> str:
    if codecs.lookup(encoding).name == "utf-8":
        return (f"{uri} is not UTF-8 ({where}): set data.csv.encoding to the file's encoding "
                "(e.g. latin-1, cp1252) or re-export it as UTF-8")
    return f"{uri} cannot be read as {encoding} ({where}): check data.csv.encoding"


def field_counts(lines: list[str], delimiter: str) -> list[int] | None:
    """Field counts of the sampled non-blank lines, or None when they do not parse."""
    try:
        return [len(row) for row in csv.reader(lines, delimiter=delimiter) if row]
    except csv.Error:
        return None


def guess_delimiter(lines: list[str], candidates: Sequence[str] = CSV_DELIMITERS) -> str | None:
    """The candidate that splits the header into the most columns and every sampled row into as
    many (the share of rows that agree decides first); None when none splits the header."""
    best, best_key = None, (0.0, 1)
    for delimiter in candidates:
        widths = field_counts(lines, delimiter)
        if not widths or widths[0] < 2:
            continue
        rows = widths[1:]
        agree = sum(width == widths[0] for width in rows) / len(rows) if rows else 1.0
        if (agree, widths[0]) > best_key:
            best, best_key = delimiter, (agree, widths[0])
    return best


def detect_dialect(head: bytes, options: CsvConfig | None = None, at_end: bool = True,
                   uri: str = "the dataset") -> tuple[CsvDialect, list[str]]:
    """The dialect of a CSV file from its first bytes (`at_end`: the file is no longer), and the
    sampled lines. A byte-order mark names the encoding; otherwise `options.encoding` does. The
    delimiter is `options.delimiter`, or detected among `,` `;` tab `|` (`;` tab `|` with a
    decimal comma), falling back to `,` (`;` with a decimal comma) when no candidate fits."""
    options = options or CsvConfig()
    encoding = next((name for mark, name in _BOMS if head.startswith(mark)), None)
    dialect = CsvDialect(options.delimiter, options.decimal, encoding or options.encoding, bom=encoding is not None,
                         detected=False)
    try:
        text = codecs.getincrementaldecoder(dialect.codec)().decode(head, final=at_end)
    except UnicodeDecodeError as error:
        raise DatasetError(undecodable_message(uri, dialect.encoding, f"byte {error.start}")) from None
    lines = text.splitlines(keepends=True)
    if not at_end and len(lines) > 1:
        lines = lines[:-1]  # the sample may end inside a line
    lines = lines[:_SAMPLE_LINES]
    if options.delimiter != "auto":
        return dialect, lines
    candidates = [d for d in CSV_DELIMITERS if d != options.decimal]
    delimiter = guess_delimiter(lines, candidates) or candidates[0]
    return replace(dialect, delimiter=delimiter, detected=True), lines
