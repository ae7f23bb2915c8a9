"""The data contract: checks that run before anything is fitted or logged.

`validate_dataset` either returns a clean frame (target mapped to 0/1, numbers stored as text
coerced, ID columns set aside) with a report of what it did, or raises `DataValidationError`
naming the column and the problem. Checks are cheap and deterministic, so they never retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlpipe.core.config import DataConfig
from mlpipe.core.errors import DataValidationError, name_list
from mlpipe.core.metrics import ranked_roc_auc
from mlpipe.data.profile import column_profile, tokens_text
from mlpipe.data.reader import RowLocator, looks_decimal_comma
from mlpipe.data.splitting import key_name, row_keys
from mlpipe.model.conform import (
    coerce_numeric_text,
    is_numeric,
    mostly_text,
    numeric_values,
    read_tokens_as_missing,
)

AUTO_TOKENS_MAX = 3  # distinct non-numeric values a numeric column may hold and still read them as missing
TOKEN_SLICE_ROWS = 1 << 16  # rows stripped at a time by `_arrow_tokens`


@dataclass
class ValidationReport:
    """What validation found and changed, for logs and the run summary."""

    rows: int = 0
    numeric_features: list[str] = field(default_factory=list)
    categorical_features: list[str] = field(default_factory=list)
    id_columns: list[str] = field(default_factory=list)
    coerced_columns: dict[str, int] = field(default_factory=dict)  # column -> blanks made missing
    positive_rate: float = 0.0
    warnings: list[str] = field(default_factory=list)
    missing_tokens: dict[str, dict[str, int]] = field(default_factory=dict)  # column -> data.na_values token -> rows
    auto_na_values: dict[str, dict[str, int]] = field(default_factory=dict)  # numeric column -> token found -> rows
    unlabeled_rows: int = 0  # rows dropped for a missing or unparseable target
    dropped_columns: dict[str, str] = field(default_factory=dict)  # column -> why it is not a feature
    profile: list[dict] = field(default_factory=list)  # a row per column: `mlpipe.data.profile`

    @property
    def features(self) -> list[str]:
        return self.numeric_features + self.categorical_features


@dataclass
class ValidatedData:
    frame: pd.DataFrame  # features + target (0/1); ID and dropped columns removed
    target: str
    report: ValidationReport
    # A uint64 per row (same index as `frame`), from the raw row before anything was dropped: a
    # hash of the configured ID columns, else of the whole row. The hash split keys on it.
    row_keys: pd.Series | None = None
    key_name: str | None = None  # "content" or "id:<columns>" (`mlpipe.data.splitting.key_name`)


def _fail(message: str, column: str | None = None) -> None:
    raise DataValidationError(message, column)


def map_target(series: pd.Series, column: str, positive_label) -> tuple[pd.Series, np.ndarray]:
    """The binary target as 0/1, and a mask of the rows it leaves unlabeled: missing, or a label
    that is neither class (with `positive_label`: the positive label and the commonest other
    one; without: 0 and 1). Fails when the positive label never appears or one class is left."""
    missing = series.isna().to_numpy()
    as_text = series.astype("string").str.strip()
    labels = as_text[~missing].unique()
    if len(labels) < 2:
        _fail(f"target {column!r} has a single class ({labels[0] if len(labels) else None!r}); a classifier needs two",
              column)
    if positive_label is None:
        numeric = pd.to_numeric(series, errors="coerce")
        unlabeled = missing | ~numeric.isin([0, 1]).to_numpy()
        y = numeric.where(~unlabeled, 0).astype("int64")
        if y[~unlabeled].nunique() < 2:
            odd = sorted({str(v) for v in series[unlabeled & ~missing]})[:5]
            _fail(f"target {column!r} has a single class among its 0/1 labels{f' (other labels: {odd})' if odd else ''}"
                  "; a classifier needs two (set data.positive_label when the target is not 0/1)", column)
        return y, unlabeled
    positive = str(positive_label).strip()
    is_positive = (as_text == positive).to_numpy(dtype=bool, na_value=False)
    if not is_positive.any():
        _fail(f"target {column!r} never takes the positive label {positive!r} "
              f"(values: {sorted(set(as_text.dropna()))[:5]}); set data.positive_label", column)
    others = as_text[~is_positive & ~missing].value_counts()
    if others.empty:
        _fail(f"target {column!r} has a single class ({positive!r}); a classifier needs two", column)
    negative = others.index[0]
    unlabeled = ~is_positive & ~(as_text == negative).to_numpy(dtype=bool, na_value=False)
    return pd.Series(is_positive.astype("int64"), index=series.index), unlabeled


def _drop_unlabeled(target: pd.Series, unlabeled: np.ndarray, config: DataConfig, rows: RowLocator,
                    report: ValidationReport) -> None:
    """Refuse the unlabeled rows (data.unlabeled_rows=fail, or more than data.max_unlabeled_share
    of the rows), naming what the target holds there and where; else record and warn about
    them, for the caller to drop."""
    count = int(unlabeled.sum())
    if not count:
        return
    column, share = config.target, count / len(target)
    missing = int(target[unlabeled].isna().sum())
    odd = target[unlabeled].dropna().astype("string").str.strip().value_counts()
    tokens = tokens_text(report.missing_tokens.get(column, {}))
    found = ", ".join([*(f"{label!r} x{n}" for label, n in odd.head(5).items()),
                       *([f"missing x{missing}" + (f" (written {tokens})" if tokens else "")] if missing else [])])
    where = rows.describe(target.index[unlabeled])
    if config.unlabeled_rows == "fail" or share > config.max_unlabeled_share:
        why = ("data.unlabeled_rows is fail" if config.unlabeled_rows == "fail" else
               f"more than data.max_unlabeled_share={config.max_unlabeled_share:g} of the rows")
        _fail(f"target {column!r} leaves {count} rows ({share:.1%}) unlabeled: {found} ({where}); {why}: label "
              "them, fix the export, or set data.positive_label / data.na_values", column)
    report.unlabeled_rows = count
    report.warnings.append(f"target {column!r}: dropped {count} unlabeled row(s) ({found}; {where}); "
                           "data.unlabeled_rows=fail refuses them instead")


def _arrow_tokens(series: pd.Series, tokens) -> tuple[pd.Series, dict[str, int]] | None:
    """`read_tokens_as_missing` for a column of Arrow strings (what the reader gives text
    columns), in Arrow's kernels: about 0.01 s for 1M rows where a look per distinct value of
    an ID column takes 0.3 s. The values are stripped only in a column where some start or end
    with a blank (stripping every value would cost 3-8x the rest), and then TOKEN_SLICE_ROWS at
    a time: a stripped copy of a whole column stayed in Arrow's allocator through the fit (22
    MB at 1M rows). None for other columns."""
    if not (isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow"):
        return None
    values = pa.chunked_array(pa.array(series.array))
    token_set = pa.array(sorted({*tokens, ""}), pa.string())
    padded = any(pc.any(edge(values, blank)).as_py() for edge in (pc.starts_with, pc.ends_with)
                 for blank in (" ", "\t"))
    hits, found = [], {}
    for start in range(0, len(values), TOKEN_SLICE_ROWS):
        part = values.slice(start, TOKEN_SLICE_ROWS)
        part = pc.utf8_trim_whitespace(part) if padded else part
        hit = pc.is_in(part, value_set=token_set).fill_null(False)
        hits += hit.chunks
        if pc.any(hit).as_py():
            for count in pc.value_counts(part.filter(hit)).to_pylist():
                found[str(count["values"])] = found.get(str(count["values"]), 0) + int(count["counts"])
    if not found:
        return series, {}
    return _arrow_nulled(values, pa.chunked_array(hits, pa.bool_()).combine_chunks(), series), found


def _arrow_nulled(values: pa.ChunkedArray, hit: pa.BooleanArray, series: pd.Series) -> pd.Series:
    """`series` (whose Arrow strings are `values`) with the rows of `hit` missing: a new validity
    bitmap over the same offsets and characters (one bit a row). `Series.mask` copied the
    column's text (~25 MB for 1M rows), held through the rest of validation beside the loaded
    frame."""
    if any(chunk.offset for chunk in values.chunks):  # a sliced frame: its bitmap would need shifting
        return series.mask(hit.to_numpy(zero_copy_only=False))
    chunks, start = [], 0
    for chunk in values.chunks:
        keep = pc.and_kleene(chunk.is_valid(), pc.invert(hit.slice(start, len(chunk))))
        keep = pc.if_else(keep, True, False) if keep.offset else keep  # a fresh array: its bitmap starts at bit 0
        chunks.append(pa.Array.from_buffers(chunk.type, len(chunk), [keep.buffers()[1], *chunk.buffers()[1:]]))
        start += len(chunk)
    nulled = type(series.array)(pa.chunked_array(chunks, values.type), dtype=series.dtype)
    return pd.Series(nulled, index=series.index, name=series.name, copy=False)


def _read_tokens(frame: pd.DataFrame, config: DataConfig, report: ValidationReport) -> pd.DataFrame:
    """Every text column with the data.na_values tokens (and whitespace-only values) made
    missing, each one found recorded in `report.missing_tokens`."""
    changed = {}
    for column in frame.columns:
        fast = _arrow_tokens(frame[column], config.na_values)
        values, found = fast if fast is not None else read_tokens_as_missing(frame[column], config.na_values)
        if found:
            changed[column] = values
            report.missing_tokens[column] = found
    return frame.assign(**changed) if changed else frame


def read_tokens(frame: pd.DataFrame, config: DataConfig) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """`frame` with the data.na_values tokens read as missing, as validation reads them, and
    the tokens found per column: what a block of a table read in blocks goes through."""
    report = ValidationReport()
    return _read_tokens(frame, config, report), report.missing_tokens


def _delimiter_hint(columns) -> str:
    """When the header was read as one column holding another delimiter (data.csv.delimiter set
    to the wrong one, or rows too irregular to detect it), the fix; else ''."""
    if len(columns) == 1:
        for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")):
            if sep in str(columns[0]):
                return f": the file looks {name}-delimited; set data.csv.delimiter to {sep!r} (or auto)"
    return ""


def mixed_type_values(series: pd.Series, min_share: float = 0.9) -> pd.Series | None:
    """For a text column whose values are mostly numbers, the values that are not (else None)."""
    if is_numeric(series) or pd.api.types.is_bool_dtype(series) or mostly_text(series):
        return None
    text = series.astype("string").str.strip()
    present = text[text.notna() & (text != "")]
    if len(present) < 10:
        return None
    parsed = pd.to_numeric(present, errors="coerce")
    share = parsed.notna().mean()
    if min_share <= share < 1.0:
        return present[parsed.isna()]
    return None


LEAK_SAMPLE_ROWS = 200_000  # a leak shows as plainly in a seeded sample, at a fraction of the cost


def leak_score(values: pd.Series, y: pd.Series) -> float:
    """How well one column alone separates the classes: roc_auc (either direction) for
    numbers, accuracy of its per-category majority class for categories (at most 50, compared
    as text). 1.0 = perfectly. `validate_dataset` measures it on a seeded sample of
    LEAK_SAMPLE_ROWS rows of big data."""
    present = values.notna()
    if present.mean() < 0.9:
        return 0.0
    v, t = values[present], y[present].to_numpy(dtype="int64")
    if is_numeric(v):
        if v.nunique() < 2 or len(np.unique(t)) < 2:
            return 0.0
        auc = ranked_roc_auc(t, v.to_numpy(dtype=float))
        return float(max(auc, 1 - auc))
    codes, categories = pd.factorize(v.astype("string"))
    if not 2 <= len(categories) <= 50:
        return 0.0
    counts = np.bincount(codes * 2 + t, minlength=2 * len(categories)).reshape(-1, 2)  # category x class
    return float(counts.max(axis=1).sum() / len(v))


def _unique_per_row(values: pd.Series, ratio: float, head: int = 10_000) -> bool:
    """`values.nunique() >= ratio * len(values)`. When the first `head` rows already repeat
    more than that allows (a category column), the answer is known without hashing every row."""
    first = values.iloc[:head]
    if len(first) - first.nunique() > (1 - ratio) * len(values):
        return False
    return values.nunique() >= ratio * len(values)


def _single_valued(values: pd.Series, head: int = 10_000) -> bool:
    """`values.nunique() <= 1`, settled by the first `head` rows when they hold two values."""
    return values.iloc[:head].nunique() <= 1 and values.nunique() <= 1


def _check_shape(frame: pd.DataFrame, config: DataConfig) -> None:
    """Fail on a frame with no rows or columns, duplicate column names, a missing target or
    required feature, or fewer than `data.min_rows` rows."""
    if frame.shape[1] == 0 or frame.empty:
        _fail("the dataset is empty (no rows)" if frame.shape[1] else "the dataset is empty (no columns)")
    duplicated = sorted({c for c in frame.columns[frame.columns.duplicated()]})
    if duplicated:
        _fail(f"duplicate column names {name_list(duplicated)}: rename them so each column is unique", duplicated[0])
    target = config.target
    if target not in frame.columns:
        _fail(f"target column {target!r} is missing{_delimiter_hint(frame.columns)} "
              f"(columns: {name_list(frame.columns)})", target)
    missing_required = [c for c in config.required_features if c not in frame.columns]
    if missing_required:
        _fail(f"required feature {missing_required[0]!r} is missing from the dataset", missing_required[0])
    if len(frame) < config.min_rows:
        _fail(f"the dataset has {len(frame)} rows, fewer than data.min_rows={config.min_rows}")


def _check_class_sizes(y: pd.Series, target: str, min_class_rows: int) -> None:
    """Fail when the rarer class of the 0/1 target `y` has fewer than `min_class_rows` rows."""
    smallest = int(min((y == 0).sum(), (y == 1).sum()))
    if smallest < min_class_rows:
        _fail(f"target {target!r}: the rarer class has {smallest} rows, fewer than the {min_class_rows} that "
              "cross-validation folds and the holdout need; add data or lower evaluation.cv_folds", target)


def _check_no_empty_column(features: pd.DataFrame) -> None:
    """Fail on the first feature column that holds no value at all."""
    all_null = [c for c in features.columns if features[c].isna().all()]
    if all_null:
        _fail(f"column {all_null[0]!r} is entirely empty: fix the extract or add it to data.drop_columns",
              all_null[0])


def _coerce_numbers_stored_as_text(features: pd.DataFrame, report: ValidationReport) -> None:
    """Replace, in place, each column of numbers stored as text by the numbers, recording in
    `report` the columns coerced and how many blanks became missing values."""
    for column in list(features.columns):
        coerced = coerce_numeric_text(features[column])
        if coerced is not None:
            features[column], blanks = coerced
            report.coerced_columns[column] = blanks
            if blanks:
                report.warnings.append(
                    f"column {column!r} holds numbers stored as text: coerced, {blanks} blank rows "
                    "became missing values")


def _numeric_column_tokens(features: pd.DataFrame, column: str, bad: pd.Series, config: DataConfig,
                           rows: RowLocator, report: ValidationReport) -> None:
    """A numeric column holding some text: a few rare tokens without digits ("?", "unknown") are
    read as missing, with a warning; else it is refused, naming the tokens and the setting."""
    counts = bad.astype("string").str.strip().value_counts()
    share = len(bad) / len(features)
    tokens = [str(t) for t in counts.index]
    tokens_only = len(tokens) <= AUTO_TOKENS_MAX and not any(ch.isdigit() for t in tokens for ch in t)
    where = rows.describe(bad.index)
    if tokens_only and share <= config.auto_na_share:
        features[column] = numeric_values(features[column], tokens)[0]
        report.auto_na_values[column] = {t: int(n) for t, n in counts.items()}
        report.warnings.append(
            f"column {column!r} is numeric but holds {tokens_text(dict(counts))} ({share:.2%} of the rows; "
            f"{where}): read as missing, here and by the registered model; list them in data.na_values to say so, or set "
            "data.auto_na_share=0 to refuse them")
        return
    head = (f"column {column!r} mixes numbers and text: {len(bad)} values ({share:.1%} of the rows) are not numbers "
            f"({tokens_text(dict(counts))}; {where})")
    if tokens_only:  # too many to guess: the user says what they mean
        _fail(f"{head}; if they mean missing, add them to data.na_values (the defaults are replaced: keep those you "
              f"need), or raise data.auto_na_share above {share:.3f}", column)
    _fail(f"{head}; fix them in the export (if some mean missing, add those to data.na_values), or add the column "
          "to data.drop_columns", column)


def _check_values(features: pd.DataFrame, config: DataConfig, rows: RowLocator, report: ValidationReport) -> None:
    """Column by column: warn about numbers with a decimal comma; read a numeric column's rare
    text tokens as missing, or fail on a column mixing numbers and text; and make infinite
    numbers missing in place (with a warning)."""
    for column in features.columns:
        if looks_decimal_comma(features[column]):
            report.warnings.append(f"column {column!r} holds numbers with a decimal comma (e.g. "
                                   f"{next(v for v in features[column].dropna() if v.strip())!r}), read as text: set data.csv.decimal "
                                   "to ',' to read them as numbers")
        bad = mixed_type_values(features[column])
        if bad is not None:
            _numeric_column_tokens(features, column, bad, config, rows, report)
        if is_numeric(features[column]):
            infinite = np.isinf(features[column].to_numpy(dtype=float, na_value=np.nan))
            if infinite.any():
                features[column] = features[column].astype(float).where(~infinite, np.nan)
                report.warnings.append(f"column {column!r} has {int(infinite.sum())} infinite values: "
                                       "treated as missing")


def _drop_id_columns(features: pd.DataFrame, config: DataConfig, report: ValidationReport) -> pd.DataFrame:
    """`features` without the configured ID columns and those that look like IDs (unique per
    row, not floats), which `report` lists (with a warning for each one found)."""
    ids = [c for c in config.id_columns if c in features.columns]
    for column in features.columns:
        if column in ids or pd.api.types.is_float_dtype(features[column]):  # measurements, not keys
            continue
        values = features[column].dropna()
        if len(features) > 1 and len(values) == len(features) and _unique_per_row(values, config.id_unique_ratio):
            ids.append(column)
            report.dropped_columns[column] = "ID: unique per row"
            report.warnings.append(f"column {column!r} is unique per row and looks like an ID: "
                                   "dropped from the features (list it in data.id_columns to silence this)")
    report.id_columns = ids
    report.dropped_columns.update({c: "ID: data.id_columns" for c in config.id_columns if c in ids})
    return features.drop(columns=ids)


def _drop_constant_columns(features: pd.DataFrame, report: ValidationReport) -> pd.DataFrame:
    """`features` without the columns that hold a single value, each one warned about in `report`."""
    constant = [c for c in features.columns if _single_valued(features[c])]
    for column in constant:
        report.dropped_columns[column] = "a single value"
        report.warnings.append(f"column {column!r} has a single value: dropped from the features")
    return features.drop(columns=constant)


def _check_leaks(features: pd.DataFrame, y: pd.Series, config: DataConfig) -> None:
    """Fail on a column that predicts the target `y` on its own (`leak_score` at or above
    data.leak_threshold), measured on a seeded sample of LEAK_SAMPLE_ROWS rows of big data.
    Fewer than 50 rows are not checked."""
    if len(features) < 50:
        return
    sample = np.arange(len(features))
    if len(features) > LEAK_SAMPLE_ROWS:
        sample = np.sort(np.random.default_rng(0).choice(len(features), LEAK_SAMPLE_ROWS, replace=False))
    sampled_y = y.iloc[sample]
    for column in features.columns:
        score = leak_score(features[column].iloc[sample], sampled_y)
        if score >= config.leak_threshold:
            _fail(f"column {column!r} predicts target {config.target!r} almost perfectly on its own (score "
                  f"{score:.4f} >= data.leak_threshold {config.leak_threshold}): it likely leaks the label "
                  "(recorded after the outcome?); add it to data.drop_columns", column)


def validate_dataset(frame: pd.DataFrame, config: DataConfig, min_class_rows: int = 2,
                     rows: RowLocator | None = None) -> ValidatedData:
    """Check `frame` against the contract in `config`; see the module docstring. Each class
    needs `min_class_rows` rows (cross-validation folds + a holdout). `rows` says where a row
    is in messages: file lines when the frame was read from a CSV file, else its row index."""
    rows = rows or RowLocator()
    report = ValidationReport(rows=len(frame))
    _check_shape(frame, config)
    target = config.target
    key_columns = [c for c in config.id_columns if c in frame.columns]
    frame = _read_tokens(frame, config, report)  # "?" hashes as the missing value it means
    keys = row_keys(frame, key_columns)  # before any column is dropped or coerced
    report.dropped_columns = {c: "data.drop_columns" for c in config.drop_columns if c in frame.columns}
    dropped = frame[list(report.dropped_columns)]
    frame = frame.drop(columns=list(report.dropped_columns))
    y, unlabeled = map_target(frame[target], target, config.positive_label)
    _drop_unlabeled(frame[target], unlabeled, config, rows, report)
    if report.unlabeled_rows:
        frame, y, keys = frame[~unlabeled], y[~unlabeled], keys[~unlabeled]
    _check_class_sizes(y, target, min_class_rows)
    features = frame.drop(columns=[target])
    _check_no_empty_column(features)
    _coerce_numbers_stored_as_text(features, report)
    _check_values(features, config, rows, report)
    profiled = features
    features = _drop_id_columns(features, config, report)
    features = _drop_constant_columns(features, report)
    _check_leaks(features, y, config)
    if features.shape[1] == 0:
        _fail("no feature columns are left after removing the target and ID columns")

    report.numeric_features = [c for c in features.columns if is_numeric(features[c])]
    report.categorical_features = [c for c in features.columns if c not in report.numeric_features]
    report.positive_rate = float(y.mean())
    report.profile = column_profile(profiled, target=target, dropped=dropped, report=report)
    clean = features  # a frame of its own (copy-on-write): a deep copy would be a third whole table
    clean[target] = y.to_numpy()
    return ValidatedData(frame=clean, target=target, report=report, row_keys=keys, key_name=key_name(key_columns))
