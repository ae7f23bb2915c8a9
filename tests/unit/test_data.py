"""tasks.data: reading CSV/Parquet, fingerprints, format detection, the train/holdout split."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pandas as pd
import pytest

from tasks.data import (DatasetError, SplitParams, dataset_format, fingerprint_dataset, hash_holdout_side, newer_than,
                        read_dataset, row_keys, split_dataset)
from tasks.validation import DataValidationError


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


def test_duplicate_column_names_are_preserved(tmp_path):
    uri = _write(tmp_path / "d.csv", "a,b,a\n1,x,2\n3,y,4\n")
    frame = read_dataset(uri)
    assert list(frame.columns) == ["a", "b", "a"]
    assert "a.1" not in frame.columns
    assert frame.iloc[:, 2].tolist() == [2, 4]


def test_non_utf8_raises_dataset_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("name,city\n1,M\u00fcnchen\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_dataset(str(path))


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


def test_tsv_is_refused_rather_than_split_on_commas(tmp_path):
    with pytest.raises(DatasetError, match="data.format"):
        read_dataset(_write(tmp_path / "d.tsv", "a\tb\n1\t2\n"))


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


# -- split_dataset -----------------------------------------------------------------------------

def _labelled(n: int = 200, positive_share: float = 0.25) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    y = np.zeros(n, dtype=int)
    y[: int(n * positive_share)] = 1
    return pd.DataFrame({"x": rng.normal(size=n), "day": np.arange(n)[::-1], "y": rng.permutation(y)})


def test_split_is_seeded():
    frame = _labelled()
    train_a, hold_a = split_dataset(frame, "y", 0.2, seed=3)
    train_b, hold_b = split_dataset(frame, "y", 0.2, seed=3)
    _, hold_c = split_dataset(frame, "y", 0.2, seed=4)
    assert list(hold_a.index) == list(hold_b.index)
    assert list(train_a.index) == list(train_b.index)
    assert sorted(hold_a.index) != sorted(hold_c.index)


def test_split_partitions_rows():
    frame = _labelled()
    for method in ("hash", "random"):
        train, holdout = split_dataset(frame, "y", 0.2, seed=1, method=method)
        assert set(train.index).isdisjoint(holdout.index)
        assert set(train.index) | set(holdout.index) == set(frame.index)
    train, holdout = split_dataset(frame, "y", 0.2, seed=1, method="random")
    assert len(holdout) == 40 and len(train) == 160  # the random split has the exact size


def test_split_is_stratified():
    frame = _labelled(n=200, positive_share=0.25)
    for seed in range(5):
        train, holdout = split_dataset(frame, "y", 0.2, seed=seed, stratify=True, method="random")
        assert train["y"].mean() == pytest.approx(0.25, abs=0.01)
        assert holdout["y"].mean() == pytest.approx(0.25, abs=0.01)


def test_time_column_puts_latest_rows_in_holdout():
    frame = _labelled(n=50)  # `day` runs 49..0, so the latest rows come first in the frame
    train, holdout = split_dataset(frame, "y", 0.2, seed=0, time_column="day")
    assert len(holdout) == 10 and len(train) == 40
    assert sorted(holdout["day"]) == list(range(40, 50))
    assert holdout["day"].min() > train["day"].max()


def test_time_column_must_exist():
    with pytest.raises(DataValidationError) as info:
        split_dataset(_labelled(), "y", time_column="signup_date")
    assert info.value.column == "signup_date"


# -- the hash-stable split ---------------------------------------------------------------------

def _customers(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"customer_id": [f"S{seed}-{i}" for i in range(n)], "x": rng.normal(size=n).round(3),
                         "plan": rng.choice(["a", "b"], n), "y": rng.integers(0, 2, n)})


def test_hash_split_keeps_each_row_on_its_side_as_the_table_grows():
    month1 = _customers(3000, 1)
    month2 = pd.concat([_customers(2000, 2), month1.sample(frac=1.0, random_state=0)], ignore_index=True)
    _, hold1 = split_dataset(month1, "y", 0.2, seed=5)
    _, hold2 = split_dataset(month2, "y", 0.2, seed=5)
    old_in_hold2 = set(hold2["customer_id"]) & set(month1["customer_id"])
    assert old_in_hold2 == set(hold1["customer_id"])  # a row that was holdout once stays holdout
    assert len(hold2) / len(month2) == pytest.approx(0.2, abs=0.02)


def test_hash_split_keyed_on_ids_ignores_changed_values():
    frame = _customers(2000, 3)
    changed = frame.assign(x=frame["x"] + 1.0, y=1 - frame["y"])
    by_id = lambda f: hash_holdout_side(row_keys(f, ["customer_id"]).to_numpy(), 0.2, 7)  # noqa: E731
    by_content = lambda f: hash_holdout_side(row_keys(f).to_numpy(), 0.2, 7)  # noqa: E731
    assert (by_id(frame) == by_id(changed)).all()
    assert (by_content(frame) != by_content(changed)).any()


def test_row_keys_agree_between_csv_and_parquet(tmp_path):
    frame = pd.DataFrame({"id": [1, 2, 3, 4], "amount": [1.0, 2.5, None, 4.0], "note": ["a", " b", None, "d"],
                          "charges": ["10.50", " ", "7", "3.25"], "flag": [True, False, True, False]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    from_csv, from_parquet = read_dataset(str(tmp_path / "t.csv")), read_dataset(str(tmp_path / "t.parquet"))
    assert row_keys(from_csv).tolist() == row_keys(from_parquet).tolist() == row_keys(frame).tolist()
    assert row_keys(frame[list(reversed(frame.columns))]).tolist() == row_keys(frame).tolist()  # column order
    assert len(set(row_keys(frame))) == 4
    assert row_keys(frame).dtype == np.uint64


def test_hash_holdout_grows_monotonically_with_the_fraction_and_depends_on_the_seed():
    keys = row_keys(_customers(5000, 4)).to_numpy()
    small, large = hash_holdout_side(keys, 0.1, 1), hash_holdout_side(keys, 0.3, 1)
    assert not (small & ~large).any()  # every 10% holdout row is in the 30% holdout
    assert small.mean() == pytest.approx(0.1, abs=0.015) and large.mean() == pytest.approx(0.3, abs=0.02)
    assert (hash_holdout_side(keys, 0.1, 2) != small).any()


def test_split_params_round_trip_through_tags():
    params = SplitParams(method="time", holdout_fraction=0.25, seed=3, key="id:customer_id", time_column="day",
                         max_train_time="39.0")
    assert SplitParams.from_tags({**params.tags(), "other": "x"}) == params
    assert SplitParams.from_tags({"mlpipe.dataset_uri": "x"}) is None  # a version from before


def test_newer_than_for_numbers_and_dates():
    assert newer_than(pd.Series([1, 5, 6, None]), "5.0").tolist() == [False, False, True, False]
    dates = pd.Series(["2026-01-31", "2026-02-01", "", "2026-03-05"])
    assert newer_than(dates, "2026-01-31T00:00:00+00:00").tolist() == [False, True, False, True]


# -- a prefix of snapshots: the newest object is trained on ----------------------------------

def test_prefix_resolves_to_the_newest_object_and_names_the_rest(tmp_path):
    import os

    from tasks.config import DataConfig
    from tasks.data import resolve_data_source

    for name, mtime in (("2026-01.csv", 100), ("2026-03.csv", 300), ("2026-02.parquet", 200), ("notes.txt", 999)):
        (tmp_path / name).write_text("a,b\n1,2\n")
        os.utime(tmp_path / name, (mtime, mtime))
    prefix = str(tmp_path) + "/"
    source = resolve_data_source(DataConfig(uri=prefix))
    assert source.data.uri == str(tmp_path / "2026-03.csv") and source.prefix == prefix
    assert source.superseded == (str(tmp_path / "2026-02.parquet"), str(tmp_path / "2026-01.csv"))
    assert source.tags() == {"mlpipe.dataset_prefix": prefix,
                             "mlpipe.dataset_superseded": "2026-02.parquet, 2026-01.csv"}
    os.utime(tmp_path / "2026-01.csv", (300, 300))  # same time: the later name wins
    assert resolve_data_source(DataConfig(uri=prefix)).data.uri == str(tmp_path / "2026-03.csv")

    plain = DataConfig(uri=str(tmp_path / "2026-01.csv"))
    assert resolve_data_source(plain).data == plain and resolve_data_source(plain).tags() == {}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no dataset objects"):
        resolve_data_source(DataConfig(uri=str(tmp_path / "empty") + "/"))
