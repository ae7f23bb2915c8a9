"""The one conform step: raw rows, as they stand in a file or a request, into what the model
was trained on.

Training's validation, batch scoring, drift monitoring and the registered model itself all
clean raw columns through this module, so every client gets the same rows scored the same way:
- missing: null, NaN, a blank or whitespace-only text, and the model's missing-value tokens
  (`data.na_values`, "?" or "N/A" say, plus the tokens validation found in a numeric column),
  in every column, whatever the client;
- numeric columns: numbers stored as text are parsed, +-inf become missing, ints become floats
  (so an int column with gaps is still a number);
- categorical columns: text, `None` where missing; booleans as "True"/"False" whatever way they
  arrive (bool, "true", 1), so a boolean column scores as it was trained.
A value in a numeric column that is present but not a number is refused, naming the column,
the value and its row: the model never guesses what "n/a yet" or "12 months" means. Refusals
are `MlflowException`s (INVALID_PARAMETER_VALUE) as well when MLflow is installed, so `mlflow
models serve` passes their message to the client instead of its generic one.

`Conform` is the first step of every registered model (see `features.model_pipeline`). This
module ships inside registered models: it imports numpy, pandas and scikit-learn only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from mlpipe.core.errors import DataValidationError

_TRUE = frozenset({"true", "1", "1.0", "yes"})
_FALSE = frozenset({"false", "0", "0.0", "no"})
_SHOWN_CHARS = 80

def served(kind: type[Exception]) -> type[Exception]:
    """`kind` that is also an `MlflowException` (INVALID_PARAMETER_VALUE), when MLflow is
    installed: `mlflow models serve` hands such an error's message to the client as a 400
    (after its prefix `Failed to predict data ...`), where any other exception becomes a
    generic message with the server's stack trace."""
    return _served_class(kind) or kind


@functools.cache
def _served_class(kind: type[Exception]) -> type[Exception] | None:
    try:  # inside a function: a model loads without MLflow, and the model layer imports no MLflow
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    except ImportError:
        return None

    class Served(kind, MlflowException):
        def __init__(self, *args):
            kind.__init__(self, *args)
            self._args = args
            MlflowException.__init__(self, kind.__str__(self), error_code=INVALID_PARAMETER_VALUE)

        def __str__(self) -> str:
            return self.message

        def __reduce__(self):  # a class made here is pickled by the kind it serves
            return _raise_served, (kind, self._args)

    Served.__name__, Served.__qualname__ = kind.__name__, kind.__qualname__
    return Served


def _raise_served(kind: type[Exception], args: tuple) -> Exception:
    return served(kind)(*args)


class MissingColumnsError(DataValidationError):
    """Raw rows lack columns the model reads (all of them are named)."""

    def __init__(self, missing: Sequence[str]):
        super().__init__(f"the input lacks column(s) {list(missing)} that the model reads; add them "
                         "(values may be blank)", missing[0])
        self.missing = list(missing)


class NotANumberError(DataValidationError):
    """A numeric column holds a value that is present but not a number."""


@dataclass(frozen=True)
class ValueProblem:
    """One value that keeps its row from being scored."""

    position: int  # 0-based position of the row in the frame given
    column: str
    value: str
    problem: str


def is_numeric(series: pd.Series) -> bool:
    """Numbers, not booleans (pandas counts bool as numeric; the model treats it as a category)."""
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def holds_booleans(series: pd.Series) -> bool:
    """True/False values, possibly with gaps (pandas reads those as object)."""
    if pd.api.types.is_bool_dtype(series):
        return True
    if not (pd.api.types.is_object_dtype(series) or isinstance(series.dtype, pd.BooleanDtype)):
        return False
    present = series.dropna()
    return not present.empty and all(isinstance(value, (bool, np.bool_)) for value in present)


def _blank(text: pd.Series, tokens: Iterable[str] = ()) -> np.ndarray:
    """Missing in stripped text: null, empty, or one of `tokens`."""
    blank = text.isna() | (text == "")
    tokens = list(tokens)
    if tokens:
        blank |= text.isin(tokens)
    return blank.to_numpy(dtype=bool, na_value=True)


def read_tokens_as_missing(series: pd.Series, tokens: Iterable[str]) -> tuple[pd.Series, dict[str, int]]:
    """A text column with its missing-value `tokens` and whitespace-only values made missing
    (compared stripped), and how often each stood there ("" for whitespace); the column itself
    and {} when it holds none, or holds numbers or booleans. One look per distinct value."""
    if not (pd.api.types.is_string_dtype(series) or pd.api.types.is_object_dtype(series)):
        return series, {}
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    wanted = frozenset(tokens) | {""}
    hit = np.array([isinstance(u, str) and u.strip() in wanted for u in uniques] + [False], dtype=bool)
    if not hit.any():
        return series, {}
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    found: dict[str, int] = {}
    for i in np.flatnonzero(hit[:-1]):
        token = str(uniques[i]).strip()
        found[token] = found.get(token, 0) + int(counts[i])
    return series.mask(hit[codes]), found


def mostly_text(series: pd.Series, sample: int = 1000) -> bool:
    """True when fewer than half of a seeded sample of the present values parse as numbers: a
    real categorical, so parsing every row (the slow part of validating big text columns) can
    be skipped. A column that is 90% numbers or more is never misjudged at this sample size."""
    if len(series) > sample:
        series = series.iloc[np.random.default_rng(0).integers(0, len(series), sample)]
    text = series.dropna().astype("string").str.strip()
    text = text[text != ""]
    return not text.empty and pd.to_numeric(text, errors="coerce").notna().mean() < 0.5


def coerce_numeric_text(series: pd.Series) -> tuple[pd.Series, int] | None:
    """If every non-blank value of a text column parses as a number, return the numeric column
    and how many blank values became missing; else None (it is a real categorical)."""
    if is_numeric(series) or pd.api.types.is_bool_dtype(series) or mostly_text(series):
        return None
    text = series.astype("string").str.strip()
    blank = _blank(text)
    present = text[~blank]
    if present.empty:
        return None
    parsed = pd.to_numeric(present, errors="coerce")
    if parsed.isna().any():
        return None
    out = pd.Series(np.nan, index=series.index, dtype="float64")
    out[~blank] = parsed.astype("float64")
    newly_missing = int((blank & series.notna().to_numpy()).sum())
    return out, newly_missing


def numeric_values(series: pd.Series, tokens: Iterable[str] = ()) -> tuple[pd.Series, np.ndarray]:
    """The column as float64 (blanks, missing-value `tokens` and +-inf missing) and a mask of
    values that are present but not a number."""
    if pd.api.types.is_bool_dtype(series):
        values = series.astype("float64")
        not_number = np.zeros(len(series), dtype=bool)
    elif series.dtype == np.float64:  # already what the model reads: shared, not copied (copy-on-write)
        values = series
        not_number = np.zeros(len(series), dtype=bool)
    elif is_numeric(series):
        values = pd.Series(series.to_numpy(dtype="float64", na_value=np.nan), index=series.index)
        not_number = np.zeros(len(series), dtype=bool)
    else:
        text = series.astype("string").str.strip()
        blank = _blank(text, tokens)
        parsed = pd.to_numeric(text.where(~blank), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        values = pd.Series(parsed, index=series.index)
        not_number = np.isnan(parsed) & ~blank
    array = values.to_numpy()
    infinite = np.isinf(array)
    if infinite.any():
        values = values.where(~infinite, np.nan)
    return values, not_number


def text_of(values: np.ndarray, boolean: bool = False) -> np.ndarray:
    """`str(value)` of each value (object array), booleans spelled "True"/"False"."""
    text = values.astype(str).astype(object)
    if boolean:
        lowered = np.char.lower(np.char.strip(text.astype(str)))
        text = np.where(np.isin(lowered, list(_TRUE)), "True",
                        np.where(np.isin(lowered, list(_FALSE)), "False", text)).astype(object)
    return text


def holds_only_text(values: pd.Series | np.ndarray) -> bool:
    """A column of strings (pandas' string dtype, or objects that are all `str`): equal values
    are the same text, so each distinct value can be converted once."""
    if isinstance(getattr(values, "dtype", None), pd.StringDtype):
        return True
    return pd.api.types.is_object_dtype(values) and pd.api.types.infer_dtype(values, skipna=True) == "string"


def per_distinct_value(values: pd.Series | np.ndarray, convert) -> tuple[np.ndarray, np.ndarray]:
    """`convert` (object array -> object array as long) applied once to each distinct value of a
    column of strings: an object array whose rows share the results (a pointer per row, not a
    string object), and the mask of the cells `pd.factorize` counts missing, left empty for the
    caller's own rule."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    out = np.empty(len(values), dtype=object)
    present = codes >= 0
    out[present] = convert(np.asarray(uniques, dtype=object))[codes[present]]
    return out, ~present


def text_values(series: pd.Series, boolean: bool = False, tokens: Iterable[str] = ()) -> pd.Series:
    """Categories as the model sees them: `str(value)` as object, None where missing (null, a
    blank or whitespace-only text, one of the missing-value `tokens`). For a `boolean` column,
    any spelling of true/false (bool, "true", 1) becomes "True"/"False".

    A text column is converted once per distinct value and its rows share those strings: a
    million rows of a few categories cost a pointer each, not a string object each (the
    values are the same either way)."""
    missing = series.isna().to_numpy()
    tokens = frozenset(tokens) | {""}

    def convert(values: np.ndarray) -> np.ndarray:  # blanks and tokens: None, like a missing value
        text = text_of(values, boolean)
        text[_missing_text(values, tokens)] = None
        return text

    if holds_only_text(series):
        text, absent = per_distinct_value(series, convert)
        odd = absent & ~missing  # a value factorize counts as missing but isna does not: as before
        if odd.any():
            text[odd] = convert(series.to_numpy(dtype=object)[odd])
    else:
        text = convert(series.to_numpy(dtype=object))
    text[missing] = None
    return pd.Series(text, index=series.index, dtype=object)


def _missing_text(values: np.ndarray, tokens: frozenset[str]) -> np.ndarray:
    """Mask of the values of an object array that are text, blank or a token once stripped."""
    return np.fromiter((isinstance(v, str) and v.strip() in tokens for v in values), dtype=bool, count=len(values))


def require_columns(columns: Iterable[str], wanted: Sequence[str]) -> None:
    """Fail, naming every one, when a column the model reads is missing."""
    present = set(columns)
    missing = [column for column in wanted if column not in present]
    if missing:
        raise MissingColumnsError(missing)


def _shown(value) -> str:
    text = str(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 3] + "..."


def _as_frame(X) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    if isinstance(X, dict) or (isinstance(X, list) and X and isinstance(X[0], dict)):
        return pd.DataFrame(X)
    raise TypeError(f"the model reads named columns: pass a pandas DataFrame (or records), got {type(X).__name__}")


class Conform(TransformerMixin, BaseEstimator):
    """Raw rows -> the model's input columns, cleaned as training cleaned them (see the module
    docstring). Columns other than `numeric` and `categorical` are ignored; a missing one is
    refused with every missing column named.

    `na_values`: the tokens that mean missing in every column (`data.na_values`);
    `column_na_values`: column -> more tokens found in that column by validation.
    Fitted state: `boolean_`, the categorical columns that held only booleans in training.
    """

    # A model saved before these parameters existed reads them from here: no tokens (as then).
    na_values: Sequence[str] = ()
    column_na_values: Mapping[str, Sequence[str]] | None = None

    def __init__(self, numeric: Sequence[str] = (), categorical: Sequence[str] = (), na_values: Sequence[str] = (),
                 column_na_values: Mapping[str, Sequence[str]] | None = None):
        self.numeric = numeric
        self.categorical = categorical
        self.na_values = na_values
        self.column_na_values = column_na_values

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def tokens(self, column: str) -> tuple[str, ...]:
        """The strings read as missing in `column`."""
        return (*self.na_values, *(self.column_na_values or {}).get(column, ()))

    def _require(self, columns) -> None:
        try:
            require_columns(columns, self.columns)
        except MissingColumnsError as error:
            raise served(MissingColumnsError)(error.missing) from None

    def fit(self, X, y=None):
        frame = _as_frame(X)
        self._require(frame.columns)
        self.boolean_ = tuple(c for c in self.categorical if holds_booleans(frame[c]))
        self.n_features_in_ = len(self.columns)
        self.feature_names_in_ = np.asarray(self.columns, dtype=object)
        return self

    def problems(self, X, parsed: dict[str, pd.Series] | None = None) -> tuple[np.ndarray, list[ValueProblem]]:
        """Rows that cannot be scored: a mask (True = refused) and each refused value, in row
        then column order. Missing columns raise `MissingColumnsError`. The numeric columns read
        as text are parsed to find them; with `parsed`, those numbers are put there by column
        (a refused row's value missing), so a caller can hand them on instead of the text."""
        frame = _as_frame(X)
        self._require(frame.columns)
        refused = np.zeros(len(frame), dtype=bool)
        found: list[tuple[int, int, ValueProblem]] = []
        for order, column in enumerate(self.numeric):
            series = frame[column]
            if is_numeric(series) or pd.api.types.is_bool_dtype(series):
                continue
            values, not_number = numeric_values(series, self.tokens(column))
            if parsed is not None:
                parsed[column] = values
            for position in np.flatnonzero(not_number):
                found.append((int(position), order, ValueProblem(int(position), column,
                                                                 _shown(series.iloc[position]), "not a number")))
            refused |= not_number
        return refused, [problem for *_, problem in sorted(found, key=lambda f: f[:2])]

    def transform(self, X) -> pd.DataFrame:
        check_is_fitted(self, "boolean_")
        frame = _as_frame(X)
        self._require(frame.columns)
        out: dict[str, pd.Series] = {}
        for column in self.numeric:
            values, not_number = numeric_values(frame[column], self.tokens(column))
            if not_number.any():
                raise served(NotANumberError)(not_a_number_message(frame[column], column, not_number), column)
            out[column] = values
        for column in self.categorical:
            out[column] = text_values(frame[column], column in self.boolean_, self.tokens(column))
        # copy=False: the columns were just made here; consolidating them would copy them all once more
        return pd.DataFrame(out, index=frame.index, columns=self.columns, copy=False)

    def get_feature_names_out(self, input_features=None):
        return np.asarray(self.columns, dtype=object)


def not_a_number_message(series: pd.Series, column: str, not_number: np.ndarray) -> str:
    """One line: the column, the values that are not numbers and their row index (0-based, as
    in the frame or request given), and what to send instead."""
    positions = np.flatnonzero(not_number)
    examples = ", ".join(f"{_shown(series.iloc[p])!r} at row index {p}" for p in positions[:3])
    more = f" and {len(positions) - 3} more" if len(positions) > 3 else ""
    verb = "is not a number" if len(positions) == 1 else "are not numbers"
    return (f"column {column!r} must hold numbers: {examples}{more} {verb}; send a number, or null "
            "(or leave it blank) when unknown")
