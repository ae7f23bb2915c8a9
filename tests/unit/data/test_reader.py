"""mlpipe.data.reader: reading CSV/Parquet whole or in chunks (dialects included), fingerprints, formats."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlpipe.core.config import CsvConfig, DataConfig
from mlpipe.core.errors import DatasetError, DataValidationError
from mlpipe.data.csv_dialect import detect_dialect
from mlpipe.data.reader import dataset_format, fingerprint_dataset, looks_decimal_comma, open_chunks, read_dataset
from mlpipe.data.validation import validate_dataset


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- read_dataset ----------------------------------------------------------------------------

def test_read_csv(tmp_path):
    uri = _write(tmp_path / "d.csv", "a, b ,c\n1,x,1.5\n2,,\n")
    frame = read_dataset(uri)
    assert list(frame.columns) == ["a", "b", "c"]  # header names are stripped
    assert frame["a"].tolist() == [1, 2]
    assert pd.api.types.is_integer_dtype(frame["a"])
    assert frame["b"].iloc[0] == "x" and pd.isna(frame["b"].iloc[1])
    assert frame["c"].iloc[0] == 1.5 and pd.isna(frame["c"].iloc[1])


def test_read_parquet_by_extension(tmp_path):
    source = pd.DataFrame({"n": [1, 2, 3], "s": ["x", None, "z"], "f": [0.5, np.nan, 2.0]})
    path = tmp_path / "d.parquet"
    source.to_parquet(path)
    frame = read_dataset(str(path))
    assert frame.shape == (3, 3)
    assert frame["n"].tolist() == [1, 2, 3]
    assert frame["s"].iloc[0] == "x" and pd.isna(frame["s"].iloc[1])
    assert pd.isna(frame["f"].iloc[1])


def test_format_from_config_overrides_extension(tmp_path):
    pq = tmp_path / "export.bin"
    pd.DataFrame({"a": [1, 2]}).to_parquet(pq)
    assert read_dataset(str(pq), "parquet")["a"].tolist() == [1, 2]
    csv_path = _write(tmp_path / "export.data", "a,b\n1,2\n")
    assert read_dataset(csv_path, "csv").to_dict("list") == {"a": [1], "b": [2]}
    with pytest.raises(DatasetError, match="cannot tell the format"):
        read_dataset(csv_path)


def test_read_gzipped_csv(tmp_path):
    path = tmp_path / "d.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("a,b\n1,2\n3,4\n")
    assert read_dataset(str(path)).to_dict("list") == {"a": [1, 3], "b": [2, 4]}


def test_csv_with_bom_and_crlf(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufeffa,b\r\n1,2\r\n".encode("utf-8"))
    frame = read_dataset(str(path))
    assert list(frame.columns) == ["a", "b"]
    assert frame.to_dict("list") == {"a": [1], "b": [2]}


def _first_chunk(uri: str, **kwargs) -> pd.DataFrame:
    with open_chunks(uri, 1000, **kwargs) as source:
        return next(source.chunks)


# The whole-file and the chunked reader are one reader: every rule below holds for both.
READERS = {"whole": read_dataset, "chunks": _first_chunk}


@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_duplicate_column_names_are_refused_naming_them(tmp_path, read):
    # pandas would rename the second `a` to `a.1` and hide a broken extract
    uri = _write(tmp_path / "d.csv", "a,b,a,c,c\n1,x,2,3,4\n")
    with pytest.raises(DatasetError, match=r"duplicate column names \['a', 'c'\]: rename"):
        read(uri)


@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_permission_error_names_the_uri_and_the_fix(tmp_path, monkeypatch, read):
    uri = _write(tmp_path / "d.csv", "a,b\n1,2\n")

    def refuse(self, path, mode="rb", **kwargs):
        raise PermissionError(13, "Permission denied", path)

    # chmod cannot take the right to read from root, which runs these tests in CI
    monkeypatch.setattr(fsspec.implementations.local.LocalFileSystem, "_open", refuse)
    with pytest.raises(DatasetError, match=f"no permission to read {uri}: check the file's permissions"):
        read(uri)


@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_non_utf8_raises_dataset_error_naming_the_option(tmp_path, read):
    path = tmp_path / "latin1.csv"
    path.write_bytes("name,city\n1,M\u00fcnchen\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"not UTF-8 \(byte 13\): set data.csv.encoding"):
        read(str(path))


def test_latin1_with_the_encoding_option(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("name;city\n1;M\u00fcnchen\n2;Z\u00fcrich\n".encode("latin-1"))
    options = CsvConfig(encoding="latin-1")
    assert read_dataset(str(path), options=options)["city"].tolist() == ["M\u00fcnchen", "Z\u00fcrich"]
    assert _first_chunk(str(path), options=options)["city"].tolist() == ["M\u00fcnchen", "Z\u00fcrich"]


def test_missing_file_raises_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(str(tmp_path / "nope.csv"))
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(str(tmp_path / "nope.parquet"))


def test_corrupt_parquet_raises_dataset_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DatasetError, match="not a readable Parquet"):
        read_dataset(str(path))


def test_ragged_csv_raises_dataset_error(tmp_path):
    uri = _write(tmp_path / "d.csv", "a,b\n1,2,3,4\n5,6,7,8\n")
    with pytest.raises(DatasetError):
        read_dataset(uri)


def test_header_only_csv_gives_empty_frame_with_columns(tmp_path):
    frame = read_dataset(_write(tmp_path / "d.csv", "a,b,c\n"))
    assert frame.shape == (0, 3)
    assert list(frame.columns) == ["a", "b", "c"]


def test_empty_file_gives_empty_frame(tmp_path):
    frame = read_dataset(_write(tmp_path / "d.csv", ""))
    assert frame.shape == (0, 0)


def test_tsv_is_read_as_tab_delimited(tmp_path):
    assert read_dataset(_write(tmp_path / "d.tsv", "a\tb\n1\t2,5\n")).to_dict("list") == {"a": [1], "b": ["2,5"]}


# -- CSV dialects: as people export them ---------------------------------------------------------

@pytest.mark.parametrize(("delimiter", "name"), [(";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")])
def test_delimiter_is_detected(tmp_path, delimiter, name):
    rows = [["id", "plan, text", "charges"], ["1", "basic", "20.5"], ["2", "", "7"], ["3", "pro", ""]]
    uri = _write(tmp_path / "d.csv", "".join(delimiter.join(
        f'"{v}"' if "," in v and delimiter == "," else v for v in row) + "\n" for row in rows))
    frame = read_dataset(uri)
    assert list(frame.columns) == ["id", "plan, text", "charges"]
    assert frame["id"].tolist() == [1, 2, 3]
    assert frame["charges"].iloc[0] == 20.5 and pd.isna(frame["charges"].iloc[2])
    with open_chunks(uri, 2) as source:
        assert source.dialect.delimiter == delimiter and source.dialect.detected
        assert source.dialect.describe().startswith(f"{name}-delimited (detected)")
        assert [len(chunk) for chunk in source.chunks] == [2, 1]


def test_one_column_file_falls_back_to_comma(tmp_path):
    dialect, _ = detect_dialect(b"value\n1\n2\n")
    assert dialect.delimiter == "," and dialect.detected
    assert read_dataset(_write(tmp_path / "d.csv", "value\n1\n2\n"))["value"].tolist() == [1, 2]


def test_configured_delimiter_is_used_as_is(tmp_path):
    uri = _write(tmp_path / "d.csv", "a;b,c\n1;2,3\n")
    frame = read_dataset(uri, options=CsvConfig(delimiter=";"))
    assert list(frame.columns) == ["a", "b,c"] and frame["b,c"].tolist() == ["2,3"]
    with open_chunks(uri, 10, options=CsvConfig(delimiter=";")) as source:
        assert not source.dialect.detected


def test_utf8_byte_order_mark_is_detected_and_dropped(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xef\xbb\xbfid;name\r\n1;Z\xc3\xbcrich\r\n")
    frame = read_dataset(str(path))
    assert list(frame.columns) == ["id", "name"] and frame["name"].tolist() == ["Z\u00fcrich"]
    with open_chunks(str(path), 10) as source:
        assert source.dialect.bom and source.dialect.delimiter == ";"
        assert source.dialect.describe() == "semicolon-delimited (detected), decimal '.', utf-8 with a byte-order mark"


def test_utf16_export_with_its_byte_order_mark(tmp_path):
    # Excel's "Unicode text": UTF-16 with a byte-order mark, tab-delimited
    path = tmp_path / "d.txt"
    path.write_bytes("id\tcity\n1\tM\u00fcnchen\n".encode("utf-16"))
    assert read_dataset(str(path)).to_dict("list") == {"id": [1], "city": ["M\u00fcnchen"]}


@pytest.mark.parametrize("read", READERS.values(), ids=READERS.keys())
def test_decimal_comma_with_semicolons(tmp_path, read):
    # `amount` has a blank, so pandas keeps it as text: its commas become points all the same
    uri = _write(tmp_path / "d.csv", "id;price;amount;code\n1;1,5;1034,5;A\n2;2,25; ;B\n3;-0,5;7;C\n")
    frame = read(uri, options=CsvConfig(decimal=","))
    assert frame["price"].tolist() == [1.5, 2.25, -0.5]
    assert frame["amount"].tolist() == ["1034.5", " ", "7"]
    assert frame["code"].tolist() == ["A", "B", "C"]
    validated = validate_dataset(frame.assign(y=[0, 1, 0]), DataConfig(target="y", positive_label=None, min_rows=2),
                                 min_class_rows=1)
    assert validated.frame["amount"].iloc[0] == 1034.5 and np.isnan(validated.frame["amount"].iloc[1])


def test_decimal_comma_left_as_text_is_named_in_a_warning(tmp_path):
    frame = read_dataset(_write(tmp_path / "d.csv", "y;price\n" + "".join(f"{i % 2};{i % 3},5\n" for i in range(6))))
    report = validate_dataset(frame, DataConfig(target="y", positive_label=None, min_rows=2)).report
    assert any("'price' holds numbers with a decimal comma (e.g. '0,5')" in w and "data.csv.decimal" in w
               for w in report.warnings), report.warnings


def test_decimal_comma_check_of_a_long_column_reads_past_its_sample():
    """Long columns are checked on a sample first; a sample of decimal-comma numbers still
    needs every row to be one (and one comma among them)."""
    numbers = pd.Series([f"{i},5" for i in range(5000)] + [" ", None], dtype="str")
    assert looks_decimal_comma(numbers)
    assert not looks_decimal_comma(numbers.where(numbers.index != 4321, "n/a"))  # one word, rarely sampled
    assert not looks_decimal_comma(pd.Series([str(i) for i in range(5000)], dtype="str"))  # no comma at all
    assert not looks_decimal_comma(pd.Series(["Month-to-month", "One year"] * 2500, dtype="str"))


@pytest.mark.parametrize("options", [{"delimiter": ";;"}, {"encoding": "klingon"}, {"delimiter": ",", "decimal": ","},
                                     {"decimal": "x"}, {"quote": "'"}])
def test_csv_options_are_checked(options):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        CsvConfig(**options)


def test_csv_tab_option_spelled_as_a_word():
    assert CsvConfig(delimiter="tab").delimiter == "\t"


def test_the_dirty_export_reads_right(tmp_path):
    spec = importlib.util.spec_from_file_location("generate_churn", Path(__file__).parents[3] / "data" / "generate_churn.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    clean = generator.generate_churn(1000, seed=3)
    for decimal_comma in (False, True):
        path = generator.write_dirty_export(tmp_path / f"dirty-{decimal_comma}.csv", 1000, seed=3,
                                            decimal_comma=decimal_comma)
        assert path.read_text().count(";") > 1000 * 14
        frame = read_dataset(str(path), options=CsvConfig(decimal="," if decimal_comma else "."))
        validated = validate_dataset(frame, DataConfig(target="churn", positive_label="Yes", min_rows=2))
        report = validated.report
        assert set(report.numeric_features) == {"senior_citizen", "tenure", "monthly_charges", "total_charges",
                                                "prev_month_minutes", "current_month_minutes", "support_calls"}
        assert "paperless_billing" in report.categorical_features and report.id_columns == ["customer_id"]
        assert set(frame["paperless_billing"].dropna()) == {True, False} and frame["paperless_billing"].isna().any()
        kept = clean.loc[validated.frame.index]  # a few `?` targets: unlabeled rows, dropped
        assert 0 < report.unlabeled_rows == len(clean) - len(kept) < 6
        np.testing.assert_allclose(validated.frame["current_month_minutes"], kept["current_month_minutes"])
        blanks = validated.frame["monthly_charges"].isna()
        assert 0 < blanks.sum() < 40
        np.testing.assert_allclose(validated.frame["monthly_charges"][~blanks], kept["monthly_charges"][~blanks])
        tokens = validated.frame["tenure"].isna()  # `?` for a missing tenure: missing, the rest as generated
        assert report.missing_tokens["tenure"] == {"?": int(tokens.sum())} and tokens.any()
        np.testing.assert_allclose(validated.frame["tenure"][~tokens], kept["tenure"][~tokens])
        assert set(report.auto_na_values) <= {"support_calls"}  # `unknown`: found, not configured


# -- short error lines ------------------------------------------------------------------------------

def test_wrong_delimiter_gives_a_short_line_with_the_hint_first(tmp_path):
    header = ";".join(f"feature_number_{i}" for i in range(40)) + ";churn"
    uri = _write(tmp_path / "d.csv", header + "\n" + ";".join(["1"] * 41) + "\n")
    frame = read_dataset(uri, options=CsvConfig(delimiter=","))  # configured wrong
    with pytest.raises(DataValidationError) as error:
        validate_dataset(frame, DataConfig(min_rows=2))
    message = str(error.value)
    assert len(message) < 200, message
    assert message.startswith("target column 'churn' is missing: the file looks semicolon-delimited; "
                              "set data.csv.delimiter to ';'")
    assert message.endswith("(columns: ['feature_num...r_39;churn'])")


def test_many_columns_without_the_target_give_a_short_line(tmp_path):
    frame = pd.DataFrame({f"a_long_feature_name_number_{i}": [1, 2] for i in range(60)})
    with pytest.raises(DataValidationError) as error:
        validate_dataset(frame, DataConfig(min_rows=2))
    assert len(str(error.value)) < 350 and "... 52 more" in str(error.value)


def test_rows_wider_than_the_header_are_refused(tmp_path):
    uri = _write(tmp_path / "d.csv", "name,city\nSmith, John,Paris\n")
    for read in READERS.values():
        with pytest.raises(DatasetError, match="the header has 2 columns but rows have 3"):
            read(uri)


# -- chunked reading ------------------------------------------------------------------------------

def test_csv_chunks_keep_text_columns_as_text(tmp_path):
    path = _write(tmp_path / "d.csv", "id,tenure,plan\n007,1,10\n008,2,20\n009,3,30\n")
    with open_chunks(path, 2, read_columns=["id", "tenure", "plan"], text_columns=["id", "plan"]) as source:
        chunks = list(source.chunks)
    assert source.columns == ["id", "tenure", "plan"] and source.types == {"id": pa.string(), "plan": pa.string()}
    assert [len(c) for c in chunks] == [2, 1]
    assert chunks[0]["id"].tolist() == ["007", "008"] and chunks[1]["plan"].tolist() == ["30"]
    assert chunks[0]["tenure"].dtype == "int64"


@pytest.mark.parametrize("delimiter,decimal", [(",", "."), (";", ","), ("\t", ".")])
@pytest.mark.parametrize("chunk_rows", [None, 3])
def test_csv_text_columns_hold_what_read_csv_reads_as_str(tmp_path, delimiter, decimal, chunk_rows):
    """Text columns are parsed as Arrow strings and made `str`: cell for cell what
    `pd.read_csv(dtype="str")` gives with only an empty field missing (zeros kept, blanks, quotes,
    non-ASCII; NA spellings stay text, for validation to read as `data.na_values` says)."""
    values = ["007", "", " ", "NA", "nan", "N/A", "null", "None", "True", "1e5", "-0", "é ü", '"a, b"', "  x  ", '"1,5"']
    rows = [delimiter.join([value, str(i), f"{i}{decimal}5"]) for i, value in enumerate(values)]
    path = _write(tmp_path / "d.csv", "code" + delimiter + "n" + delimiter + "x\n" + "\n".join(rows) + "\n")
    options = CsvConfig(delimiter={"\t": "tab"}.get(delimiter, delimiter), decimal=decimal)
    with open_chunks(path, chunk_rows, text_columns=["code"], options=options) as source:
        read = pd.concat(list(source.chunks), ignore_index=True)
    expected = pd.read_csv(path, sep=delimiter, decimal=decimal, dtype={"code": "str"}, keep_default_na=False,
                           na_values=[""])
    assert read["code"][3] == "NA" and read["code"][7] == "None"
    assert read["code"].dtype == expected["code"].dtype == "str"
    pd.testing.assert_series_equal(read["code"], expected["code"])
    assert read["code"][0] == "007" and pd.isna(read["code"][1]) and read["code"][2] == " "
    pd.testing.assert_series_equal(read["x"], expected["x"])


def test_csv_chunks_read_only_the_wanted_columns(tmp_path):
    path = _write(tmp_path / "d.csv", "a,b,c\n1,2,3\n4,5,6\n")
    with open_chunks(path, 10, read_columns=["c", "a", "zz"]) as source:
        (chunk,) = list(source.chunks)
    assert source.columns == ["a", "b", "c"] and list(chunk.columns) == ["a", "c"]


def test_missing_dataset_and_empty_file_in_chunks(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        with open_chunks(str(tmp_path / "nope.csv"), 10):
            pass
    with pytest.raises(DatasetError, match="is empty: expected a header row"):
        with open_chunks(_write(tmp_path / "e.csv", ""), 10):
            pass


def test_parquet_is_read_in_batches_of_chunk_rows(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"tenure": range(5), "plan": list("abcde"), "unused": range(5)}).to_parquet(path)
    with open_chunks(str(path), 2, read_columns=["tenure", "plan"]) as source:
        chunks = list(source.chunks)
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert list(chunks[0].columns) == ["tenure", "plan"]
    assert source.types["tenure"] == pa.int64() and "unused" in source.columns and source.dialect is None


def test_parquet_read_in_chunks_keeps_memory_flat(tmp_path):
    """What a chunk held is freed once it is consumed: the reader keeps no cache of the ranges it
    read (pyarrow's pre_buffer kept them all until the last chunk: scoring 10M rows peaked at
    2.3 GB). 2M rows of 8 float
    columns (128 MB) read 20k at a time, in a fresh interpreter."""
    path = tmp_path / "wide.parquet"
    rng = np.random.default_rng(0)
    pd.DataFrame(rng.normal(size=(2_000_000, 8)), columns=list("abcdefgh")).to_parquet(path, row_group_size=200_000)
    check = f"""
from pathlib import Path
from mlpipe.data.reader import open_chunks
def rss():
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096
with open_chunks({str(path)!r}, 20_000) as source:
    chunks = iter(source.chunks)
    rows = len(next(chunks))
    start = peak = rss()
    for chunk in chunks:
        rows += len(chunk)
        peak = max(peak, rss())
    assert rows == 2_000_000, rows
    assert peak - start < 40 * 2**20, (start, peak)
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]


@pytest.mark.slow  # over 10 s
def test_chunks_do_not_read_the_whole_file(tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    path.write_text("id;x;y\n" + "".join(f"{i};{i * 0.5};label{i % 7}\n" for i in range(300_000)))
    size = path.stat().st_size
    reads = []
    real_open = fsspec.implementations.local.LocalFileSystem._open

    def counting(self, *args, **kwargs):
        handle = real_open(self, *args, **kwargs)
        real_read = handle.read
        handle.read = lambda n=-1: reads.append(n) or real_read(n)
        return handle

    monkeypatch.setattr(fsspec.implementations.local.LocalFileSystem, "_open", counting)
    with open_chunks(str(path), 100) as source:
        first = next(source.chunks)
        consumed = sum(reads)
        assert first["id"].tolist() == list(range(100)) and source.dialect.delimiter == ";"
        assert -1 not in reads and consumed < size / 5, (consumed, size)
        assert sum(len(chunk) for chunk in source.chunks) == 300_000 - 100


# -- fingerprint -------------------------------------------------------------------------------

def test_fingerprint_is_sha256_of_content(tmp_path):
    payload = b"a,b\n1,2\n"
    path = tmp_path / "d.csv"
    path.write_bytes(payload)
    fingerprint = fingerprint_dataset(str(path))
    assert fingerprint.value == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert str(fingerprint) == fingerprint.value
    assert fingerprint.size == len(payload)
    assert fingerprint.uri == str(path)


def test_fingerprint_equal_for_equal_content_and_changes_with_content(tmp_path):
    first, second = tmp_path / "one.csv", tmp_path / "two.csv"
    first.write_bytes(b"a,b\n1,2\n")
    second.write_bytes(b"a,b\n1,2\n")
    assert fingerprint_dataset(str(first)).value == fingerprint_dataset(str(second)).value
    before = fingerprint_dataset(str(first)).value
    first.write_bytes(b"a,b\n1,3\n")  # same size, one byte differs
    assert fingerprint_dataset(str(first)).value != before


def test_fingerprint_missing_file_and_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        fingerprint_dataset(str(tmp_path / "nope.csv"))
    with pytest.raises(DatasetError, match="folder"):
        fingerprint_dataset(str(tmp_path))


# -- dataset_format --------------------------------------------------------------------------

@pytest.mark.parametrize(("uri", "expected"), [
    ("data/churn.csv", "csv"),
    ("s3://bucket/churn.CSV.gz", "csv"),
    ("file:///tmp/x.txt", "csv"),
    ("s3://bucket/churn.parquet", "parquet"),
    ("s3://bucket/churn.pq?versionId=3", "parquet"),
])
def test_dataset_format_by_extension(uri, expected):
    assert dataset_format(uri) == expected


def test_dataset_format_configured_wins():
    assert dataset_format("data/churn.csv", "parquet") == "parquet"


@pytest.mark.parametrize("uri", ["data/churn.json", "data/churn", "data/churn.xlsx"])
def test_dataset_format_unknown_extension(uri):
    with pytest.raises(DatasetError, match="data.format"):
        dataset_format(uri)


def test_file_uri_reads_like_a_path(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,x\n2,y\n")
    assert read_dataset(path.as_uri()).equals(read_dataset(str(path)))
