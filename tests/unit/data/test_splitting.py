"""mlpipe.data.splitting: seeded, time and hash-stable train/holdout splits, row keys, split parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpipe.core.errors import DataValidationError
from mlpipe.data.reader import read_dataset
from mlpipe.data.splitting import (
    SplitParams,
    _may_be_numbers,
    _text_numbers,
    hash_holdout_side,
    newer_than,
    row_keys,
    split_dataset,
)

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


def test_copies_of_a_row_are_split_like_other_rows_and_keep_their_side_in_a_later_snapshot():
    """Titanic's three coarse columns repeat for 85% of rows: all copies on one side made its
    holdout a few big groups (one class mostly)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"sex": rng.choice(["m", "f"], 3000), "cls": rng.choice(["1st", "3rd"], 3000),
                          "y": rng.choice([0, 1], 3000)})
    keys = row_keys(frame)
    assert keys.nunique() == len(frame)  # copies numbered
    side = hash_holdout_side(keys.to_numpy(), 0.2, 42)
    assert side.mean() == pytest.approx(0.2, abs=0.03)
    assert frame.loc[side, "y"].mean() == pytest.approx(frame["y"].mean(), abs=0.05)
    grown = pd.concat([frame, frame.head(500)], ignore_index=True)  # the next snapshot appends rows
    assert (row_keys(grown).iloc[:3000].to_numpy() == keys.to_numpy()).all()
    assert row_keys(frame, ["sex"]).nunique() == 2  # rows of one ID stay together


def test_hash_holdout_grows_monotonically_with_the_fraction_and_depends_on_the_seed():
    keys = row_keys(_customers(5000, 4)).to_numpy()
    small, large = hash_holdout_side(keys, 0.1, 1), hash_holdout_side(keys, 0.3, 1)
    assert not (small & ~large).any()  # every 10% holdout row is in the 30% holdout
    assert small.mean() == pytest.approx(0.1, abs=0.015) and large.mean() == pytest.approx(0.3, abs=0.02)
    assert (hash_holdout_side(keys, 0.1, 2) != small).any()


def test_split_params_round_trip_through_tags():
    params = SplitParams(method="time", holdout_fraction=0.25, seed=3, key="id:customer_id", time_column="day",
                         max_train_time="39.0")
    assert list(params.tags()) == ["mlpipe.split"]  # one tag on the version
    assert SplitParams.from_tags({**params.tags(), "other": "x"}) == params
    assert SplitParams.from_tags({"mlpipe.dataset_uri": "x"}) is None  # a version from before
    older = {"mlpipe.split.method": "time", "mlpipe.split.holdout_fraction": "0.25", "mlpipe.split.seed": "3",
             "mlpipe.split.key": "id:customer_id", "mlpipe.split.time_column": "day",
             "mlpipe.split.max_train_time": "39.0", "mlpipe.split.key_scheme": params.key_scheme}
    assert SplitParams.from_tags(older) == params  # a version registered with one tag per field


def test_newer_than_for_numbers_and_dates():
    assert newer_than(pd.Series([1, 5, 6, None]), "5.0").tolist() == [False, False, True, False]
    dates = pd.Series(["2026-01-31", "2026-02-01", "", "2026-03-05"])
    assert newer_than(dates, "2026-01-31T00:00:00+00:00").tolist() == [False, True, False, True]


def test_row_keys_hash_values_by_meaning_not_storage():
    """1, 1.0, "1.0" and " 1 " are one value; blank, None and NaN are one missing value; a
    boolean equals its text; big int64 IDs keep every digit; numbers never collide with words."""
    as_stored = [pd.Series([1, 2**60, 2**60 + 1]), pd.Series([1.0, float(2**60), float(2**60 + 1)])]
    one = [row_keys(pd.DataFrame({"v": values}))[0] for values in
           (pd.Series([1]), pd.Series([1.0]), pd.Series(["1.0"]), pd.Series([" 1 "]), pd.Series(["1"], dtype="string"))]
    assert len(set(one)) == 1
    missing = [row_keys(pd.DataFrame({"v": values}))[0] for values in
               (pd.Series([None], dtype=object), pd.Series([np.nan]), pd.Series([" "]), pd.Series([""]),
                pd.Series([pd.NA], dtype="Int64"))]
    assert len(set(missing)) == 1
    assert row_keys(pd.DataFrame({"v": [True]}))[0] == row_keys(pd.DataFrame({"v": ["True"]}))[0]
    assert row_keys(pd.DataFrame({"v": [True]}))[0] != row_keys(pd.DataFrame({"v": [False]}))[0]
    ids = row_keys(pd.DataFrame({"v": as_stored[0]}), ["v"])
    assert ids[1] != ids[2]  # exact int64, not a rounded float
    words = row_keys(pd.DataFrame({"v": ["1", "one", "1.5", "inf", "-inf", "nan"]}), ["v"])
    assert len(set(words)) == 6 and missing[0] not in set(words)
    # fixed values: keys must not drift between versions, or every snapshot's split would move
    assert int(row_keys(pd.DataFrame({"a": [1], "b": ["x"]}))[0]) == 15989393571542512393


def _generated_texts(rng, count: int) -> list[str]:
    """Short texts of number-like and other characters (non-ASCII digits, NUL, minus sign...)."""
    alphabet = list("0123456789+-.eE \t") + list("infatyINFATYdDxXbBoO_,") + ["\x00", "\u0661", "\uff11", "\u2212", "\xa0", "\n"]
    weights = np.array([6.0] * 10 + [3.0] * 7 + [1.0] * (len(alphabet) - 17))
    return ["".join(rng.choice(alphabet, size=rng.integers(0, 12), p=weights / weights.sum())) for _ in range(count)]


_ODD_NUMBERS = ["inf", "-inf", "+Infinity", "nan", "NaN", "", "9007199254740993", "18446744073709551615",
                "-9223372036854775809", "123456789012345678901234567890", "1e400", "-1e-400", "0.1", "1.0"]


def test_every_text_that_parses_as_a_number_passes_the_character_filter():
    """`_text_numbers` parses only the texts `_may_be_numbers` lets through: none outside parses."""
    texts = pd.Series(_generated_texts(np.random.default_rng(1), 20_000) + _ODD_NUMBERS, dtype="string")
    parsed = pd.to_numeric(texts, errors="coerce").notna().to_numpy()
    candidate = _may_be_numbers(texts)
    assert parsed.sum() > 2000 and not (parsed & ~candidate).any()
    assert candidate.sum() < 0.6 * len(texts)  # the filter does filter: about half hold other characters


def test_text_numbers_equal_to_numeric_bit_for_bit_in_any_mixture():
    """Parsing only the texts that can be numbers gives `to_numeric`'s floats exactly, whatever
    else the column holds: big integers round the same, with or without words beside them."""
    rng = np.random.default_rng(2)
    for _ in range(600):
        pool = (_generated_texts(rng, int(rng.integers(1, 10))) + list(rng.choice(_ODD_NUMBERS, size=rng.integers(0, 3)))
                + (["CUST-1", "abc"] if rng.random() < 0.5 else []))
        texts = pd.Series([pool[i] for i in rng.permutation(len(pool))], dtype="string")
        if rng.random() < 0.2:
            texts[int(rng.integers(0, len(texts)))] = pd.NA
        expected = pd.to_numeric(texts, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        assert np.array_equal(_text_numbers(texts).view("uint64"), expected.view("uint64")), list(texts)


def test_hash_split_sides_are_disjoint_cover_the_rows_and_are_frames_of_their_own():
    frame = pd.DataFrame({"x": np.arange(2000, dtype=float), "y": np.arange(2000) % 2,
                          "c": pd.Series([f"v{i % 7}" for i in range(2000)], dtype="str")})
    train, holdout = split_dataset(frame, "y", 0.25, 3)
    assert len(train) + len(holdout) == 2000 and not set(train.index) & set(holdout.index)
    pd.testing.assert_frame_equal(pd.concat([train, holdout]).sort_index(), frame)
    train.loc[train.index[0], "x"] = -1.0  # copy-on-write: the table split stays as it was
    assert frame.loc[train.index[0], "x"] == float(train.index[0])


def test_text_hashes_in_slices_are_the_digests_of_each_text(monkeypatch):
    """Hashed a few texts at a time (bounded memory for a million distinct IDs): still BLAKE2b
    (8 bytes, big-endian) of each text, in order, across slice edges."""
    import hashlib

    from mlpipe.data import splitting

    texts = pd.Series([f"id-{i:05d}" for i in range(23)] + ["é", "x" * 300], dtype="str")
    expected = np.array([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "big") for t in texts],
                        dtype="uint64")
    monkeypatch.setattr(splitting, "_TEXTS_PER_SLICE", 4)
    np.testing.assert_array_equal(splitting._text_hashes(texts), expected)
    np.testing.assert_array_equal(splitting._text_hashes(texts.iloc[:0]), np.zeros(0, dtype="uint64"))
