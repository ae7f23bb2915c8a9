"""Feature engineering as scikit-learn transformers, assembled from `FeaturesConfig`.

Everything here becomes part of the registered model, so the model serves raw rows. The
transformers work on plain arrays (so sklearn's estimator checks apply) and keep their params
in `__init__`, fitted state in attributes ending in `_`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils._indexing import _safe_indexing
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import _num_samples, check_is_fitted, validate_data

from mlpipe.core.errors import DataValidationError
from mlpipe.core.memory import return_freed_memory
from mlpipe.model.conform import Conform, holds_only_text, per_distinct_value, text_of

if TYPE_CHECKING:  # this module ships inside registered models: keep it to sklearn, numpy, pandas
    from mlpipe.core.config import FeaturesConfig


def _guarded_divide(numerators: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerators / denominator (one column), NaN where the denominator is 0, missing or not
    finite and wherever the result is not finite."""
    valid = np.isfinite(denominator) & (denominator != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(valid, numerators / np.where(valid, denominator, 1.0), np.nan)
    out[~np.isfinite(out)] = np.nan
    return out


class SafeRatio(TransformerMixin, BaseEstimator):
    """Divide every column but the last by the last one.

    Where the denominator is 0, missing or not finite, the ratio is missing (NaN) rather than
    inf, so the imputer downstream fills it like any other gap.
    """

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype="numeric", ensure_all_finite="allow-nan", ensure_min_features=2)
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype="numeric", ensure_all_finite="allow-nan", reset=False)
        return self._derive(X[:, :-1].astype(float), X[:, -1:].astype(float))

    def _derive(self, columns: np.ndarray, last: np.ndarray) -> np.ndarray:
        return _guarded_divide(columns, last)

    def _name(self, column: str, last: str) -> str:
        return f"{column}_per_{last}"

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", [f"x{i}" for i in range(self.n_features_in_)])
        if input_features is not None:
            names = list(input_features)
        return np.asarray([self._name(n, names[-1]) for n in names[:-1]], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class RelativeChange(SafeRatio):
    """The relative drop of every column but the last from the last one: (last - column) / last.

    With the columns (current, previous) this is the seed's activity_drop: the share of the
    previous value lost since, positive for a fall and negative for growth. Where the previous
    value is 0, missing or not finite the change is missing (NaN), not inf or a made-up number,
    so the imputer downstream fills it like any other gap.
    """

    def _derive(self, columns: np.ndarray, last: np.ndarray) -> np.ndarray:
        return _guarded_divide(last - columns, last)

    def _name(self, column: str, last: str) -> str:
        return f"drop_{last}_to_{column}"


class Bucketizer(TransformerMixin, BaseEstimator):
    """Cut numeric columns at fixed `edges` into bucket indices 0..len(edges).

    A missing value gets its own bucket (len(edges) + 1), so "unknown tenure" stays visible to
    the model instead of being folded into a real bucket.
    """

    def __init__(self, edges=(0.0,)):
        self.edges = edges

    def fit(self, X, y=None):
        validate_data(self, X, dtype="numeric", ensure_all_finite="allow-nan")
        edges = np.asarray(self.edges, dtype=float)
        if edges.ndim != 1 or edges.size == 0 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"edges must be a non-empty, strictly increasing list, got {self.edges!r}")
        self.edges_ = edges
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype="numeric", ensure_all_finite="allow-nan", reset=False)
        buckets = np.digitize(X, self.edges_, right=False).astype(float)
        buckets[np.isnan(X)] = len(self.edges_) + 1
        return buckets

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self)
        if input_features is not None:
            return np.asarray(list(input_features), dtype=object)
        return np.asarray(getattr(self, "feature_names_in_", [f"x{i}" for i in range(self.n_features_in_)]),
                          dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


MISSING = "__missing__"  # what `_as_text` writes for a missing category (None or NaN)


def _is_missing(values: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: v is None or (isinstance(v, float) and np.isnan(v)), otypes=[bool])(values)


def _column_text(column: np.ndarray | pd.Series) -> np.ndarray:
    """One column of `_as_text`: `str(value)` as object, MISSING for None and NaN. A column of
    strings (what `Conform` gives) is converted once per distinct value (`per_distinct_value`),
    its rows sharing the results; `np.asarray` of a frame of pandas `str` columns would make a
    string object per cell (450 MB for six columns of 800k rows). The cells factorize counts
    missing are read one by one. Other columns (numbers, mixed objects, where factorize would
    take 1, 1.0 and True for one value) convert cell by cell."""
    if isinstance(column, pd.Series) and not (isinstance(column.dtype, pd.StringDtype) or column.dtype == object):
        column = column.to_numpy(dtype=object)  # categories, numbers, booleans: their values as objects
    if not holds_only_text(column):
        values = np.asarray(column, dtype=object)
        out = text_of(values)  # object, not fixed-width: the marker must fit whole
        out[_is_missing(values)] = MISSING
        return out
    out, absent = per_distinct_value(column, text_of)
    positions = np.flatnonzero(absent)
    if positions.size:
        values = np.asarray(column.iloc[positions] if isinstance(column, pd.Series) else column[positions],
                            dtype=object)
        out[positions] = np.where(_is_missing(values), MISSING, text_of(values))
    return out


def _as_text(X):
    """Categoricals arrive as pandas `str`, object or mixed; the encoder wants one type.
    Column by column: a copy of one column at most besides the result."""
    if isinstance(X, pd.DataFrame):
        columns = [X.iloc[:, j] for j in range(X.shape[1])]
    else:
        X = np.asarray(X, dtype=object)
        if X.ndim == 1:
            return _column_text(X)
        columns = [X[:, j] for j in range(X.shape[1])]
    text = np.empty((len(X), len(columns)), dtype=object)
    for j, column in enumerate(columns):
        text[:, j] = _column_text(column)
    return text


class FeatureMatrix(ColumnTransformer):
    """scikit-learn's ColumnTransformer, its blocks written into one float32 matrix a slice of
    rows at a time.

    The stock one computes every block's output over all rows (float64, the one-hot blocks
    made dense first), then stacks them into a new float64 matrix: at the end of a fit the
    blocks, their stacked copy and the conformed input are all held at once (at 800k rows,
    0.6 GB on top of the table). Here a large input is fitted block by block, each block's
    output let go as soon as its width is known, and then transformed `_ROWS_PER_PASS` rows at
    a time into one float32 matrix allocated once: what is held besides the input and the
    result is one slice's blocks. Every block works row by row once fitted (imputers, scalers,
    encoders, ratios, buckets), so the slices give the very values a whole pass gives.
    Within a slice a one-hot block (the encoders emit sparse float32) is scattered into its
    zeroed columns, with no dense temporary. float32 keeps every value this makes (scaled
    numbers, ratios, 0/1 indicators and buckets) to 7 significant digits; scikit-learn's trees
    fit on float32 anyway, and logistic regression fits float32 as it comes, without a copy.
    Names, small inputs, a sparse result (with `sparse_threshold` set), transformer weights,
    routed parameters and pandas output are the stock class's."""

    _ROWS_PER_SLICE = 65_536  # bounds the row and column index arrays of a sparse block's slice
    _ROWS_PER_PASS = 65_536  # rows transformed at once when the input is larger
    _fitting_only = False  # set for the duration of a block-by-block fit

    def _streams(self, X, params) -> bool:
        """Whether this input is fitted block by block and transformed in slices: a large one,
        a dense float result, none of the stock options that need the whole output at once."""
        return (not params and self.sparse_threshold == 0 and self.transformer_weights is None
                and isinstance(self.remainder, str) and self.remainder == "drop"
                and _get_output_config("transform", self)["dense"] == "default"
                and all(not isinstance(block, str) for _, block, _ in self.transformers)
                and _num_samples(X) > self._ROWS_PER_PASS)

    def fit(self, X, y=None, **params):
        if not self._streams(X, params):
            return super().fit(X, y, **params)
        self._fit_blocks(X, y)
        return self

    def fit_transform(self, X, y=None, **params):
        if not self._streams(X, params):
            return super().fit_transform(X, y, **params)
        self._fit_blocks(X, y)
        return_freed_memory()  # the blocks' fitting temporaries, before the matrix is allocated
        return self.transform(X)

    def _fit_blocks(self, X, y) -> None:
        """The stock fit, each block's output replaced by its shape."""
        self._fitting_only = True
        try:
            super().fit_transform(X, y)
        finally:
            del self._fitting_only

    def _call_func_on_transformers(self, X, y, func, column_as_labels, routed_params):
        if not self._fitting_only:
            return super()._call_func_on_transformers(X, y, func, column_as_labels, routed_params)
        fitted = []
        for name, block, columns, _ in self._iter(fitted=False, column_as_labels=column_as_labels,
                                                 skip_drop=True, skip_empty_columns=True):
            part = _safe_indexing(X, columns, axis=1)
            block = clone(block).fit(part, y)
            width = block.transform(_safe_indexing(part, [0], axis=0)).shape[1]
            # a read-only view of one zero: the block's shape, for the stock bookkeeping, no memory
            fitted.append((np.broadcast_to(np.float32(0), (_num_samples(part), width)), block))
        return fitted

    def transform(self, X, **params):
        check_is_fitted(self)
        if not self._streams(X, params) or self.sparse_output_:
            return super().transform(X, **params)
        rows = _num_samples(X)
        out = None
        for first in range(0, rows, self._ROWS_PER_PASS):
            part = super().transform(_safe_indexing(X, slice(first, first + self._ROWS_PER_PASS), axis=0))
            if out is None:
                out = np.empty((rows, part.shape[1]), dtype=np.float32)
            out[first:first + part.shape[0]] = part
        return out

    def _hstack(self, Xs, *, n_samples):
        if self._fitting_only:
            return None  # the blocks were only fitted: `transform` writes the matrix
        if self.sparse_output_ or not all(isinstance(X, np.ndarray) or sparse.issparse(X) for X in Xs):
            return super()._hstack(Xs, n_samples=n_samples)
        out = np.empty((n_samples, sum(X.shape[1] for X in Xs)), dtype=np.float32)
        start = 0
        for X in Xs:
            stop = start + X.shape[1]
            write_block(X, out[:, start:stop])
            start = stop
        return out


def write_block(block, into: np.ndarray) -> None:
    """Write one block's output (dense, or sparse: scattered a slice of rows at a time) into the
    view `into` of the feature matrix (same shape)."""
    if sparse.issparse(block):
        _scatter(sparse.csr_matrix(block), into, FeatureMatrix._ROWS_PER_SLICE)
    else:
        into[...] = block


def _scatter(block: sparse.csr_matrix, into: np.ndarray, rows_per_slice: int) -> None:
    """Write sparse `block` into the dense view `into` (same shape): zeros, then its stored values."""
    into[...] = 0
    for first in range(0, block.shape[0], rows_per_slice):
        part = block[first:first + rows_per_slice].tocoo()
        into[part.row + first, part.col] = part.data


@dataclass(frozen=True)
class FeatureSpec:
    """The raw columns a model reads, by role (decided once, from the validated data)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    na_values: tuple[str, ...] = ()  # read as missing in every column (data.na_values)
    column_na_values: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (column, tokens validation found there)

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def median_of_present(values: np.ndarray) -> float:
    """The median of one column's present values (NaN when it has none): SimpleImputer's
    "median" statistic, computed a column at a time (the imputer passes each column's present
    values). The stock strategy sorts a masked copy of the whole input at once, with an index
    array beside it: 190 MiB for 7 columns of 800k rows, against one column's copy here. The
    statistics are the same to the bit, a column with no value included (missing, then
    dropped). Not for `keep_empty_features`, where the stock strategy fills such a column with 0."""
    return float(np.median(values)) if values.size else np.nan


def build_preprocessor(spec: FeatureSpec, config: FeaturesConfig) -> FeatureMatrix:
    """The unfitted feature transformer for `spec` (a `FeatureMatrix`: float32 out): numeric
    impute (+ missing indicators, + scale), categorical impute + one-hot (unknown categories
    ignored, rare ones grouped), plus the configured derived features. The defaults suit linear
    models as well as trees."""
    impute = median_of_present if config.numeric_impute == "median" else config.numeric_impute
    numeric_steps = [SimpleImputer(strategy=impute, add_indicator=config.missing_indicators)]
    if config.scale_numeric:
        numeric_steps.append(StandardScaler())
    grouped = config.max_categories is not None or config.min_category_frequency is not None
    categorical = make_pipeline(
        FunctionTransformer(_as_text, feature_names_out="one-to-one"),
        OneHotEncoder(handle_unknown="infrequent_if_exist" if grouped else "ignore",
                      max_categories=config.max_categories, min_frequency=config.min_category_frequency,
                      sparse_output=True, dtype=np.float32),  # scattered into the matrix, never dense
    )
    transformers: list[tuple] = []
    if spec.numeric:
        transformers.append(("numeric", make_pipeline(*numeric_steps), list(spec.numeric)))
    if spec.categorical:
        transformers.append(("categorical", categorical, list(spec.categorical)))
    known = set(spec.columns)
    for ratio in config.ratios:
        _require(known, ratio.name, ratio.numerator, ratio.denominator)
        transformers.append((ratio.name, _derived_numeric(SafeRatio(), config),
                             [ratio.numerator, ratio.denominator]))
    for change in config.changes:
        _require(known, change.name, change.previous, change.current)
        transformers.append((change.name, _derived_numeric(RelativeChange(), config),
                             [change.current, change.previous]))
    for bucket in config.buckets:
        _require(known, bucket.name, bucket.column)
        transformers.append((
            bucket.name,
            make_pipeline(Bucketizer(edges=tuple(bucket.edges)),
                          OneHotEncoder(handle_unknown="ignore", sparse_output=True, dtype=np.float32)),
            [bucket.column],
        ))
    return FeatureMatrix(transformers, remainder="drop", sparse_threshold=0.0, verbose_feature_names_out=True)


def _derived_numeric(derive: SafeRatio, config: FeaturesConfig) -> Pipeline:
    """A derived number, imputed (it is missing where its denominator is 0) and optionally scaled."""
    steps = [derive, SimpleImputer(strategy=config.numeric_impute, keep_empty_features=True)]
    if config.scale_numeric:
        steps.append(StandardScaler())
    return make_pipeline(*steps)


def _require(known: set[str], feature: str, *columns: str) -> None:
    for column in columns:
        if column not in known:
            raise DataValidationError(
                f"derived feature {feature!r} needs column {column!r}, which is not a numeric or "
                "categorical feature of this dataset (missing, or dropped as an ID)", column)


def feature_spec(numeric: list[str], categorical: list[str], config: FeaturesConfig, na_values: Sequence[str] = (),
                 column_na_values: Mapping[str, Sequence[str]] | None = None) -> FeatureSpec:
    """Roles of the raw columns, and the tokens read as missing (everywhere, and per column);
    derived-feature inputs must be numeric."""
    for name, column in [(r.name, c) for r in config.ratios for c in (r.numerator, r.denominator)] + [
        (c.name, column) for c in config.changes for column in (c.previous, c.current)
    ] + [(b.name, b.column) for b in config.buckets]:
        if column in categorical:
            raise DataValidationError(
                f"derived feature {name!r} needs numeric column {column!r}, but it holds text", column)
    columns = {*numeric, *categorical}
    per_column = tuple((c, tuple(t)) for c, t in sorted((column_na_values or {}).items()) if c in columns)
    return FeatureSpec(tuple(numeric), tuple(categorical), tuple(na_values), per_column)


def raw_feature_frame(frame, spec: FeatureSpec):
    """The columns the model reads, in order."""
    return frame[spec.columns]


class ModelPipeline(Pipeline):
    """The registered model: conform -> features -> estimator, plus the decision threshold.

    `predict_proba` is scikit-learn's. `predict` answers what a caller of the registered model
    wants, a frame with `probability` (of the positive class, float64) and `label` (1 where
    `probability >= threshold`, int64), one row per input row; MLflow's pyfunc flavour, `mlflow
    models serve` and batch scoring all answer through it.
    """

    def __init__(self, steps, *, threshold: float = 0.5, memory=None, transform_input=None, verbose=False):
        super().__init__(steps, memory=memory, transform_input=transform_input, verbose=verbose)
        self.threshold = threshold

    def positive_proba(self, X) -> np.ndarray:
        """Probability of the positive class (label 1) per row."""
        proba = self.predict_proba(X)
        classes = list(self.classes_)
        return np.asarray(proba[:, classes.index(1) if 1 in classes else -1], dtype="float64")

    def predict(self, X, **params) -> pd.DataFrame:
        probability = self.positive_proba(X)
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame({"probability": probability,
                             "label": (probability >= self.threshold).astype("int64")}, index=index)


def model_pipeline(spec: FeatureSpec, preprocessor: ColumnTransformer, estimator,
                   threshold: float = 0.5) -> ModelPipeline:
    """The unfitted model for `spec`: raw rows are conformed first, so every client can send
    rows as they stand in the training file."""
    conform = Conform(numeric=spec.numeric, categorical=spec.categorical, na_values=spec.na_values,
                      column_na_values={column: list(tokens) for column, tokens in spec.column_na_values} or None)
    return ModelPipeline([("conform", conform),
                          ("features", preprocessor), ("model", estimator)], threshold=threshold)
