"""The train/holdout split: row keys, the hash-stable side of a row, time and random splits, and
the split parameters recorded on a model version. Prefect-free (scikit-learn only for the
random split and stratified samples, imported on use)."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mlpipe.core.memory import empty_like
from mlpipe.core.errors import DataValidationError

# -- the train/holdout split ----------------------------------------------------------------------
# A row's side is a function of the row itself (TFX ExampleGen's hash buckets): the same row lands
# on the same side in every snapshot of a growing table, so a later model can be compared with an
# earlier one on rows that neither was fit on, without storing any data, only these parameters.

CONTENT_KEY = "content"
# Version of `row_keys`' hashing, recorded with every split. Scheme 1 (BLAKE2b of each row's joined
# text, about 13 s per million rows) was replaced by scheme 2 (per-column, per-distinct-value
# hashing, about 1 s): a model split under another scheme has other keys for the same rows.
ROW_KEY_SCHEME = "2"


# Tags keep the kinds of value apart, so a number never collides with a text by construction.
_MISSING = np.uint64(0x9E3779B97F4A7C15)
_INTEGER = np.uint64(0x632BE59BD9B4E019)
_FLOAT = np.uint64(0x85EBCA77C2B2AE63)
_COPY = np.uint64(0xC2B2AE3D27D4EB4F)
_COMBINE = np.uint64(0x100000001B3)


_TEXTS_PER_SLICE = 65_536


def _text_hashes(values: pd.Series) -> np.ndarray:
    """BLAKE2b (8 bytes) of each text, as uint64. A slice of texts at a time: a million distinct
    IDs as Python strings and digests at once would hold about 140 MB."""
    blake = functools.partial(hashlib.blake2b, digest_size=8)
    out = np.empty(len(values), dtype="uint64")
    for first in range(0, len(values), _TEXTS_PER_SLICE):
        # plain str: iterating Arrow strings is slow
        texts = values.iloc[first:first + _TEXTS_PER_SLICE].astype(str).to_numpy(dtype=object).tolist()
        out[first:first + len(texts)] = np.frombuffer(b"".join([blake(t.encode()).digest() for t in texts]),
                                                      dtype=">u8")
    return out


# Every character a text that `pd.to_numeric` reads as a number can hold: digits, sign, point,
# exponent, the letters of inf/infinity/nan, and ASCII blanks. A text with any other character is not
# a number (tests/unit/data/test_splitting.py checks this on generated texts).
_NUMBER_CHARACTERS = r"^[0-9+\-.eEinfatyINFATY \t\n\r\f\v]*$"


def _text_numbers(text: pd.Series) -> np.ndarray:
    """`pd.to_numeric(text, errors="coerce")` as float64, bit for bit, with only the texts that
    could be numbers parsed (1M IDs: 1.1 s -> 0.1 s). to_numeric picks its result type (int or
    float, masked or not) from the kinds of value it saw, and a big integer's float can depend on
    that type; so one text that cannot be a number stays in, as any number of them would."""
    parse = _may_be_numbers(text)
    if parse.all():
        return pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    parse[np.argmin(parse)] = True  # the first text that is not a number: the rest add no kind of value
    numbers = np.full(len(text), np.nan)
    numbers[parse] = pd.to_numeric(text[parse], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return numbers


def _may_be_numbers(text: pd.Series) -> np.ndarray:
    """True where a text holds only `_NUMBER_CHARACTERS` (or is missing): the texts
    `_text_numbers` parses. Arrow's regex, one pass over the column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    maybe = pc.match_substring_regex(pa.array(text.array, from_pandas=True), _NUMBER_CHARACTERS).fill_null(True)
    return np.asarray(maybe, dtype=bool)


def _value_hashes(values: pd.Series) -> np.ndarray:
    """A uint64 per distinct value that does not depend on how the file stored it: blanks, None
    and NaN are one missing value; a number (also one stored as text) hashes by its value, so 1,
    1.0 and "1.0" agree; text is stripped; booleans hash as "True"/"False"."""
    if values.empty:
        return np.zeros(0, dtype="uint64")
    if pd.api.types.is_bool_dtype(values) or pd.api.types.infer_dtype(values, skipna=True) == "boolean":
        return _text_hashes(values.astype(str))
    text, exact = None, None
    if pd.api.types.is_integer_dtype(values):
        exact = values.to_numpy(dtype="int64")
        numbers = exact.astype("float64")
    elif pd.api.types.is_numeric_dtype(values):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    else:
        text = values.astype("string").str.strip()
        numbers = _text_numbers(text)
    hashes = np.full(len(values), _MISSING, dtype="uint64")
    integral = np.isfinite(numbers) & (numbers == np.floor(numbers))
    if exact is None:  # a float that holds a whole number hashes as that integer (1.0 == 1)
        integral &= np.abs(numbers) < 2**53
        exact = np.where(integral, numbers, 0).astype("int64")
    hashes[integral] = _mix64(exact[integral].view("uint64") ^ _INTEGER)
    fraction = ~np.isnan(numbers) & ~integral  # also +/-inf
    hashes[fraction] = _mix64(numbers[fraction].view("uint64") ^ _FLOAT)
    if text is not None:
        words = np.isnan(numbers) & text.fillna("").ne("").to_numpy()
        hashes[words] = _text_hashes(text[words])
    return hashes


def _column_hashes(series: pd.Series) -> np.ndarray:
    """One uint64 per row of a column; each distinct value is hashed once."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    hashes = _value_hashes(pd.Series(uniques, dtype=series.dtype if len(uniques) else "object"))
    return np.where(codes < 0, _MISSING, hashes[np.maximum(codes, 0)] if len(hashes) else _MISSING)


def row_keys(frame: pd.DataFrame, key_columns: list[str] | None = None, number_copies: bool = True) -> pd.Series:
    """A uint64 key per row: a hash of the `key_columns` (the IDs) when given, else of the whole
    row (every column, the target too), columns in name order. A value hashes by what it means,
    not how it is stored (see `_value_hashes`), so the CSV and the Parquet export of the same rows
    get the same keys. Stable across processes, machines and library versions: BLAKE2b for text
    and splitmix64 arithmetic for numbers, both ours, not pandas' hash. Vectorised per column and
    hashed once per distinct value (1M rows x 15 columns in about a second).

    Content keys number identical rows: the k-th copy of a row (k >= 1, in file order) hashes
    with its number, so copies are split like any other rows. Without it every copy lands on one
    side, and a table of few coarse columns (Titanic's: 85% of rows repeat another) gets a holdout
    made of a few big groups (roc_auc 0.32 on it). Snapshots that append rows keep each copy's
    number, hence its side. ID keys are not numbered: rows of one ID stay together.
    `number_copies=False`: content keys without the copy numbers (a block of a bigger table:
    the copies are numbered across blocks, `numbered_keys`)."""
    columns = sorted(key_columns) if key_columns else sorted(frame.columns, key=str)
    if frame.empty or not columns:
        return pd.Series(np.zeros(len(frame), dtype="uint64"), index=frame.index, name="row_key")
    keys = np.zeros(len(frame), dtype="uint64")
    with np.errstate(over="ignore"):
        for column in columns:
            keys = _mix64(keys * _COMBINE + _column_hashes(frame[column]))
    if not key_columns and number_copies:
        keys = numbered_keys(keys, pd.Series(keys).groupby(keys, sort=False).cumcount().to_numpy())
    return pd.Series(keys, index=frame.index, name="row_key")


def numbered_keys(keys: np.ndarray, copy: np.ndarray) -> np.ndarray:
    """Content keys with their copy numbers: the k-th copy (k >= 1) of a row hashes with k,
    the first keeps its key (`row_keys`)."""
    keys, copy = np.asarray(keys, dtype="uint64"), np.asarray(copy).astype("uint64")
    with np.errstate(over="ignore"):
        return np.where(copy > 0, _mix64(keys ^ _mix64(copy ^ _COPY)), keys)


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads any uint64 key uniformly over [0, 2**64)."""
    z = values.astype("uint64", copy=True)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_holdout_side(keys, holdout_fraction: float, seed: int) -> np.ndarray:
    """True where a row with this key belongs to the holdout, for a split with this fraction and
    salt (`seed`). Pure arithmetic on the key: the same row, fraction and seed give the same side
    in any snapshot, on any machine."""
    return key_uniform(keys, f"mlpipe-split:{seed}") < holdout_fraction


def key_uniform(keys, salt: str) -> np.ndarray:
    """A number in [0, 1) per key, uniform over keys and a pure function of (key, salt): the
    hash split's draw (salt `mlpipe-split:<seed>`), and any other seeded choice of rows that
    must not depend on where or in which block a row is read."""
    salted = int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=8).digest(), "big")
    with np.errstate(over="ignore"):
        mixed = _mix64(np.asarray(keys, dtype="uint64") ^ np.uint64(salted))
    return (mixed >> np.uint64(11)).astype("float64") / float(1 << 53)


def _time_values(series: pd.Series) -> pd.Series:
    """A time column as something ordered: numbers as they are, anything else as datetimes."""
    if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_datetime64_any_dtype(series):
        return series
    return pd.to_datetime(series, errors="coerce", utc=True, format="mixed")


def parse_time(value: str, like: pd.Series):
    """A recorded time (a tag's text) as a value comparable with `_time_values(like)`."""
    if pd.api.types.is_numeric_dtype(like):
        return float(value)
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp


def newer_than(series: pd.Series, recorded: str) -> np.ndarray:
    """True where a row's time is strictly after the recorded time (missing times: False)."""
    values = _time_values(series)
    newer = values > parse_time(recorded, values)
    return np.asarray(newer.fillna(False) if hasattr(newer, "fillna") else newer, dtype=bool)


@dataclass(frozen=True)
class SplitParams:
    """How a model's rows were split: enough to tell later, for any row, whether that model
    trained on it. Recorded as one model-version tag, `mlpipe.split` (JSON)."""

    method: str  # "hash", "time" or "random"
    holdout_fraction: float
    seed: int
    key: str = CONTENT_KEY  # "content", or "id:<col>,<col>" when keyed on ID columns
    time_column: str | None = None
    max_train_time: str | None = None  # time splits: the newest time the model trained on
    key_scheme: str = ROW_KEY_SCHEME  # how row_keys hashed: keys of two schemes cannot be matched

    def tags(self) -> dict[str, str]:
        return {"mlpipe.split": json.dumps(asdict(self), sort_keys=True)}  # one tag: a version's page lists each

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "SplitParams | None":
        """The params recorded on a version (its `mlpipe.split` tag, or the `mlpipe.split.*` tags
        of a version registered before there was one), or None for a version without them."""
        recorded = json.loads(tags["mlpipe.split"]) if "mlpipe.split" in tags else {
            k.removeprefix("mlpipe.split."): v for k, v in tags.items() if k.startswith("mlpipe.split.")}
        get = lambda k: None if recorded.get(k) in (None, "") else str(recorded[k])  # noqa: E731
        if get("method") is None:
            return None
        return cls(method=get("method"), holdout_fraction=float(get("holdout_fraction") or 0),
                   seed=int(get("seed") or 0), key=get("key") or CONTENT_KEY, time_column=get("time_column"),
                   max_train_time=get("max_train_time"), key_scheme=get("key_scheme") or "1")

    def describe(self) -> str:
        if self.method == "time":
            return f"time split on {self.time_column!r} (trained up to {self.max_train_time})"
        keyed = "row content" if self.key == CONTENT_KEY else self.key.removeprefix("id:")
        return f"{self.method} split, holdout {self.holdout_fraction:g}, seed {self.seed}, keyed on {keyed}"


def key_name(key_columns: list[str] | None) -> str:
    """The `SplitParams.key` of a split keyed on these ID columns (none: the row content)."""
    return "id:" + ",".join(sorted(key_columns)) if key_columns else CONTENT_KEY


@dataclass
class Split:
    """Train and holdout rows, the holdout rows' keys and the parameters that made the split."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    holdout_keys: np.ndarray  # uint64, one per holdout row, in order
    params: SplitParams
    time_range: tuple[str, str] | None = None  # oldest and newest time in the data (time splits)

    def let_go_of_train_rows(self) -> None:
        """Keep the train rows' columns and dtypes, not the rows: for the steps after the last
        fit and evaluation (registration, promotion), which read only the holdout."""
        self.train = empty_like(self.train)


def split_dataset(frame: pd.DataFrame, target: str, holdout_fraction: float = 0.2, seed: int = 42,
                  stratify: bool = True, time_column: str | None = None, method: str = "hash",
                  keys: pd.Series | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/holdout split. `hash` (default): a row is holdout when the hash of its key (`keys`,
    else its content) falls in the holdout fraction, so it stays on the same side in every
    snapshot (not stratified: the class balance of each side follows the data's, within
    sampling noise). `random`: seeded, stratified on the target. With `time_column`: the latest
    rows are the holdout, whatever the method."""
    if time_column:
        if time_column not in frame.columns:
            raise DataValidationError(f"split.time_column {time_column!r} is not a column of the dataset",
                                      time_column)
        order = _time_values(frame[time_column]).sort_values(kind="stable").index
        ordered = frame.loc[order]
        cut = int(round(len(ordered) * (1 - holdout_fraction)))
        return ordered.iloc[:cut].copy(), ordered.iloc[cut:].copy()
    if method == "hash":
        keys = row_keys(frame) if keys is None else keys.loc[frame.index]
        side = hash_holdout_side(keys.to_numpy(), holdout_fraction, seed)
        return frame.loc[~side], frame.loc[side]  # a mask selects copies: no second copy of each side
    from sklearn.model_selection import train_test_split

    labels = frame[target] if stratify else None
    train, holdout = train_test_split(frame, test_size=holdout_fraction, random_state=seed, stratify=labels)
    return train.copy(), holdout.copy()


def split_validated(validated, config) -> Split:
    """Split validated data as `config` (a `SplitConfig`) says, keeping what identifies the rows."""
    frame, keys = validated.frame, validated.row_keys
    if keys is None:  # data validated without keys (an older cached result): key on the content
        keys = row_keys(frame)
    method = "time" if config.time_column else config.method
    train, holdout = split_dataset(frame, validated.target, config.holdout_fraction, config.seed, config.stratify,
                                   config.time_column, method, keys)
    if train.empty or holdout.empty or holdout[validated.target].nunique() < 2:
        raise DataValidationError(
            f"the {method} split left {len(train)} train and {len(holdout)} holdout rows "
            f"({int(holdout[validated.target].sum()) if len(holdout) else 0} positives in the holdout): the holdout "
            "needs both classes; add data or raise split.holdout_fraction", validated.target)
    max_time = time_range = None
    if config.time_column:
        as_text = lambda v: v.isoformat() if hasattr(v, "isoformat") else repr(float(v))  # noqa: E731
        max_time = as_text(_time_values(train[config.time_column]).max())
        times = _time_values(frame[config.time_column])
        time_range = (as_text(times.min()), as_text(times.max()))
    params = SplitParams(method=method, holdout_fraction=config.holdout_fraction, seed=config.seed,
                         key=validated.key_name or CONTENT_KEY, time_column=config.time_column,
                         max_train_time=max_time)
    return Split(train, holdout, keys.loc[holdout.index].to_numpy(dtype="uint64"), params, time_range)



def stratified_sample(frame: pd.DataFrame, target: str, max_rows: int | None, seed: int = 42) -> pd.DataFrame:
    """At most `max_rows` rows of `frame`, each class keeping its share (all rows when it is small
    enough or `max_rows` is None). Seeded, so a cached and a fresh evaluation agree."""
    if max_rows is None or len(frame) <= max_rows:
        return frame
    from sklearn.model_selection import train_test_split

    # Positions, not the frame: splitting the frame itself would also copy the rows left out
    # (a second copy of nearly the whole table). The same draw picks the same rows, in order.
    positions, _ = train_test_split(np.arange(len(frame)), train_size=max_rows, random_state=seed,
                                    stratify=frame[target])
    return frame.iloc[positions]
