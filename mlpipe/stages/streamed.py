"""Training over a table that this process never holds (`compute.stream`): the xgboost and
lightgbm families on Ray Train, fed by Ray Data passes over the source, block by block.

read (Ray Data, in blocks) -> statistics per block, merged: the contract's table checks, the
target's classes, unlabeled rows -> row keys per block (content keys numbered across the table)
-> the hash split per block -> a bounded sample (drawn by row key) -> column roles and the
feature steps, validated and fitted on the sample -> train / early-stopping / holdout Datasets,
transformed per block -> Ray Train -> the holdout scored per block: (label, score) come back.
The champion comparison scores the holdout block by block too (`StreamedHoldout`).

The model is the one a local fit registers (conform -> features -> booster), serving raw rows;
a row's side of the split is the one the local path gives it (same keys, same hash).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from mlpipe.adapters import ray_data
from mlpipe.core.config import PipelineConfig
from mlpipe.core.memory import empty_like
from mlpipe.data.blocks import (BASE_KEY, HOLDOUT, KEY, LABEL, STATISTICS, BlockStatistics, LabelRule,
                                block_statistics, check_table, keyed_block, label_rule, merge_statistics,
                                number_copies, repeated_content_keys, sample_rows, sample_share, side_rows,
                                split_block, unique_content_keys)
from mlpipe.data.splitting import Split, SplitParams, key_name
from mlpipe.data.validation import ValidatedData, validate_dataset
from mlpipe.model import boosters
from mlpipe.model.features import FeatureSpec, build_preprocessor, feature_spec, model_pipeline
from mlpipe.stages.training import build_estimator

EARLY_STOPPING_SALT = "mlpipe-early-stopping:{seed}"
SAMPLE_SALT = "mlpipe-sample:{seed}"


@dataclass
class StreamedTable:
    """The table as Ray Datasets (lazy: each use reads the source again, block by block), what
    the passes over it found, and the bounded sample that came back (train and holdout rows)."""

    rows: Any  # Ray Dataset: labelled rows with KEY, LABEL, HOLDOUT
    statistics: BlockStatistics
    rule: LabelRule
    warnings: list[str]
    sample: pd.DataFrame  # raw columns (tokens read as missing), KEY, LABEL, HOLDOUT


def read_streamed(config: PipelineConfig) -> StreamedTable:
    """Every pass over the source the fit needs before the sample: statistics, keys, split."""
    data = config.data
    table = ray_data.read_table(data.uri, data.format, data.csv)
    statistics = merge_statistics(
        ray_data.to_frame(ray_data.map_blocks(table, block_statistics, config=data))[STATISTICS].tolist())
    check_table(statistics, data)
    rule, warnings = label_rule(statistics, data, config.min_class_rows())
    keyed = ray_data.map_blocks(table, keyed_block, config=data)
    if not [c for c in data.id_columns if c in statistics.columns]:
        keyed = _numbered(keyed)
    rows = ray_data.map_blocks(keyed, split_block, target=data.target, rule=rule,
                               holdout_fraction=config.split.holdout_fraction, seed=config.split.seed)
    share = sample_share(statistics.rows, config.compute.stream_sample_rows)
    sample = ray_data.to_frame(ray_data.map_blocks(rows, sample_rows, share=share,
                                                   salt=SAMPLE_SALT.format(seed=config.split.seed)))
    return StreamedTable(rows, statistics, rule, warnings, sample)


def _numbered(keyed):
    """Content keys with their copy numbers across the table: the rows whose content key
    repeats are grouped (a distributed group-by of those rows only) and numbered together."""
    repeated = ray_data.repeated_values(keyed, BASE_KEY).to_numpy(dtype="uint64")
    singles = ray_data.map_blocks(keyed, unique_content_keys, repeated=repeated)
    if not len(repeated):
        return singles
    copies = ray_data.map_groups(ray_data.map_blocks(keyed, repeated_content_keys, repeated=repeated), BASE_KEY,
                                 number_copies)
    return ray_data.union(singles, copies)


def validate_sample(table: StreamedTable, config: PipelineConfig) -> ValidatedData:
    """The data contract on the sample (column roles, IDs, leaks, tokens in numeric columns),
    its report completed with the whole table's figures: rows, unlabeled rows, tokens found,
    each column's missing share, the positive rate."""
    sample = table.sample
    train = sample[~sample[HOLDOUT].to_numpy()]
    validated = validate_dataset(train.drop(columns=[KEY, LABEL, HOLDOUT]), config.data, config.min_class_rows())
    validated.frame[config.data.target] = train[LABEL].to_numpy()  # the table's 0/1 mapping, not the sample's
    validated.row_keys = train[KEY]
    validated.key_name = key_name([c for c in config.data.id_columns if c in sample.columns])
    report, stats = validated.report, table.statistics
    report.warnings = table.warnings + [f"on a sample of {len(train)} train rows: {w}" for w in report.warnings]
    report.rows, report.unlabeled_rows, report.missing_tokens = stats.rows, table.rule.unlabeled, stats.tokens
    report.positive_rate = table.rule.class_rows[1] / sum(table.rule.class_rows)
    missing = stats.missing_share()
    for row in report.profile:
        if row.get("column") in missing:
            row["missing"] = round(missing[row["column"]], 4)
    return validated


@dataclass
class StreamedHoldout:
    """The table's holdout rows where they lie (a lazy Ray Dataset: each use reads the source
    again), scored block by block: the champion comparison's `HoldoutBlocks`."""

    rows: Any  # Ray Dataset: labelled rows with KEY, LABEL, HOLDOUT
    data_cpus: float

    def score_unseen(self, unseen, models: dict[str, Any], columns: list[str]) -> pd.DataFrame:
        with ray_data.task_cpus(self.data_cpus):
            holdout = ray_data.map_blocks(self.rows, side_rows, holdout=True)
            return ray_data.to_frame(ray_data.map_blocks(holdout, comparison_block, unseen=unseen, models=models,
                                                         columns=columns))


def comparison_block(frame: pd.DataFrame, unseen, models: dict[str, Any], columns: list[str]) -> pd.DataFrame:
    """A block's holdout rows that `unseen(rows, keys)` keeps: key, label, each model's score and
    the error of a model other than `candidate` (its scores NaN) in this block, else ""."""
    keys = frame[KEY].to_numpy(dtype="uint64")
    mask = np.asarray(unseen(frame, keys), dtype=bool)
    rows = frame[mask]
    out = pd.DataFrame({"key": keys[mask], "label": rows[LABEL].to_numpy(dtype="int64")})
    errors = []
    for name, model in models.items():
        try:
            out[name] = np.asarray(model.predict_proba(rows[columns])[:, 1], dtype="float64") if len(rows) \
                else np.empty(0)
        except Exception as error:  # the champion: an incompatible schema is its problem, reported
            if name == "candidate":
                raise
            out[name] = np.nan
            errors.append(f"{type(error).__name__}: {error}")
    out["error"] = "; ".join(errors)
    return out


@dataclass
class StreamedFit:
    """What a streamed fit gives the rest of the train flow: the model, the split (its train
    side empty; its holdout a bounded sample of the holdout rows, for the importance and to tell
    whether a champion's rows can be identified), the validation report, the holdout's labels
    and scores (all rows), and the holdout in blocks (the champion comparison's rows)."""

    model: Any
    split: Split
    validated: ValidatedData
    spec: FeatureSpec
    train_sample: pd.DataFrame
    labels: np.ndarray
    scores: np.ndarray
    holdout: StreamedHoldout


def feature_block(frame: pd.DataFrame, steps, columns: list[str]) -> pd.DataFrame:
    """A block of rows as the booster's input: the fitted conform and feature steps' output
    (f0..fn) and the 0/1 target (`boosters.LABEL`)."""
    matrix = steps.transform(frame[columns])
    matrix = matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix, dtype="float64")
    out = pd.DataFrame(matrix.astype("float64", copy=False), columns=[f"f{i}" for i in range(matrix.shape[1])])
    out[boosters.LABEL] = frame[LABEL].to_numpy(dtype="float64")
    return out


def score_block(frame: pd.DataFrame, model, columns: list[str]) -> pd.DataFrame:
    """A block's labels and the model's positive-class probabilities: all that comes back."""
    return pd.DataFrame({"label": frame[LABEL].to_numpy(dtype="int64"),
                         "score": model.positive_proba(frame[columns])})


def fit_streamed(config: PipelineConfig) -> StreamedFit:
    """Read, validate and split in blocks; fit the feature steps on the sample; train the
    booster on Ray Train over the transformed blocks; score the holdout block by block. Each
    Ray Data task asks compute.ray_data_cpus CPUs."""
    with ray_data.task_cpus(config.compute.ray_data_cpus):
        return _fit_streamed(config)


def _fit_streamed(config: PipelineConfig) -> StreamedFit:
    table = read_streamed(config)
    validated = validate_sample(table, config)
    report, target = validated.report, config.data.target
    spec = feature_spec(report.numeric_features, report.categorical_features, config.features,
                        list(config.data.na_values), {c: sorted(t) for c, t in report.auto_na_values.items()})
    model = model_pipeline(spec, build_preprocessor(spec, config.features), build_estimator(config.model))
    train_sample = validated.frame
    model[:-1].fit(train_sample[spec.columns], train_sample[target].to_numpy())
    steps, rows = model[:-1], table.rows
    n_features = feature_block(table.sample.head(1), steps, spec.columns).shape[1] - 1
    model[-1].fit_datasets(_train_datasets(rows, model[-1], steps, spec.columns, config.split.seed), n_features,
                           config.compute.ray_worker_cpus)
    scored = ray_data.to_frame(ray_data.map_blocks(ray_data.map_blocks(rows, side_rows, holdout=True), score_block,
                                                   model=model, columns=spec.columns))
    return StreamedFit(model, _split(table, config, spec), validated, spec, train_sample,
                       scored["label"].to_numpy(), scored["score"].to_numpy(),
                       StreamedHoldout(rows, config.compute.ray_data_cpus))


def _train_datasets(rows, estimator, steps, columns: list[str], seed: int) -> dict:
    """The train rows transformed per block; with early stopping, a share of them
    (validation_fraction, drawn by row key) is the validation Dataset instead."""
    train = ray_data.map_blocks(rows, side_rows, holdout=False)
    parts = {"train": train}
    if estimator.early_stopping_rounds is not None:
        draw = {"share": float(estimator.validation_fraction), "salt": EARLY_STOPPING_SALT.format(seed=seed)}
        parts = {"train": ray_data.map_blocks(train, sample_rows, inside=False, **draw),
                 "validation": ray_data.map_blocks(train, sample_rows, inside=True, **draw)}
    return {name: ray_data.map_blocks(part, feature_block, steps=steps, columns=columns)
            for name, part in parts.items()}


def _split(table: StreamedTable, config: PipelineConfig, spec: FeatureSpec) -> Split:
    """The split as the steps after the fit take it: no train rows (their columns only), the
    sampled holdout rows with their keys, and the split's parameters."""
    sample, target = table.sample, config.data.target
    holdout = sample[sample[HOLDOUT].to_numpy()]
    frame = holdout[spec.columns].assign(**{target: holdout[LABEL].to_numpy()})
    params = SplitParams(method="hash", holdout_fraction=config.split.holdout_fraction, seed=config.split.seed,
                         key=key_name([c for c in config.data.id_columns if c in sample.columns]))
    return Split(empty_like(frame), frame, holdout[KEY].to_numpy(dtype="uint64"), params)


def local_cv_model(model):
    """The model's recipe fitted in-process (num_workers 0): cross-validation on the bounded
    sample refits it once per fold, which Ray Train would start and stop each time."""
    return clone(model).set_params(model__num_workers=0)
