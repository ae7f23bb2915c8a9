"""mlpipe.data.csv_dialect: delimiter, decimal mark and encoding of a CSV file from its first bytes."""

from __future__ import annotations

import codecs

import pytest

from mlpipe.core.config import CsvConfig
from mlpipe.core.errors import DatasetError
from mlpipe.data.csv_dialect import CsvDialect, detect_dialect, field_counts, guess_delimiter


def test_semicolon_file_with_commas_in_its_text_is_still_semicolon():
    lines = ["name;city;n\n", "Smith, John;Paris, FR;1\n", "Doe, Jane;Rome;2\n"]
    assert guess_delimiter(lines) == ";"


def test_decimal_comma_never_detects_comma_as_the_delimiter():
    # every row has as many commas as the header: only the decimal setting tells them apart
    dialect, _ = detect_dialect(b"a,b;c\n1,5;2\n", CsvConfig(decimal=","))
    assert dialect.delimiter == ";"
    dialect, _ = detect_dialect(b"a\n1,5\n", CsvConfig(decimal=","))
    assert dialect.delimiter == ";"  # the fallback with a decimal comma


def test_the_delimiter_that_every_row_agrees_with_wins():
    lines = ["a|b;c\n", "1|2;3\n", "4|5;6\n", "7|8\n"]  # only '|' splits every row like the header
    assert guess_delimiter(lines) == "|"
    assert guess_delimiter(["single\n", "1\n"]) is None


def test_a_byte_order_mark_names_the_encoding_whatever_the_option():
    dialect, lines = detect_dialect(codecs.BOM_UTF8 + b"a;b\n1;2\n", CsvConfig(encoding="latin-1"))
    assert dialect.bom and dialect.encoding == "utf-8" and dialect.codec == "utf-8-sig"
    assert lines[0] == "a;b\n"  # the mark is not part of the first column's name


def test_a_sample_that_ends_mid_file_drops_its_cut_last_line():
    _, lines = detect_dialect(b"a,b\n1,2\n3,", at_end=False)
    assert lines == ["a,b\n", "1,2\n"]


def test_bytes_that_are_not_utf8_name_the_option_and_the_file():
    with pytest.raises(DatasetError, match=r"x\.csv is not UTF-8 \(byte 4\).*data\.csv\.encoding"):
        detect_dialect(b"a,b\n\xff,1\n", uri="x.csv")


def test_a_configured_delimiter_is_not_detected():
    dialect, _ = detect_dialect(b"a,b\n1,2\n", CsvConfig(delimiter="|"))
    assert dialect.delimiter == "|" and not dialect.detected
    assert dialect.describe() == "pipe-delimited (configured), decimal '.', utf-8"
    assert CsvDialect(":").describe().startswith("':'-delimited (detected)")


def test_field_counts_of_rows_that_do_not_parse_is_none():
    assert field_counts(["a,b\n", "1,2,3\n", "\n"], ",") == [2, 3]
