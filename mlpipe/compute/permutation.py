"""Permutation importance without re-running the feature steps: the holdout is conformed and
turned into the feature matrix once, and each shuffle of a raw column only moves that column's
own feature columns.

A registered model is conform -> features (a ColumnTransformer) -> estimator. Every step before
the estimator works row by row, and the steps we build also work column by column: a numeric
column's imputed and scaled value, its missing indicator, a category's one-hot columns each
depend on that raw column's value alone. Shuffling raw column c's rows therefore shuffles the
same rows of exactly those feature columns, so the matrix of a shuffled copy is the unshuffled
matrix with those columns' rows reordered: the very numbers the model's own `predict_proba` on
the shuffled rows would compute, with no conform, text conversion or encoding of the copies.
A block whose outputs mix raw columns (a ratio of two columns) or that is of a kind not listed
in `_outputs_by_input` is recomputed on the shuffled copies, only that block.

Used by `evaluation_units.column_importance`; numpy, pandas, SciPy and scikit-learn only (it
runs in Ray workers too).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from mlpipe.model.conform import Conform
from mlpipe.model.features import Bucketizer, FeatureMatrix, _as_text, write_block


def _outputs_by_input(transformer, n_inputs: int) -> list[np.ndarray] | None:
    """For a fitted transformer that maps each input column to output columns of its own (its
    output rows for input k depend on input column k only), the output positions of each input
    column; None for any other transformer (or one whose shape is not what it should be)."""
    one_each = [np.array([k]) for k in range(n_inputs)]
    if transformer is None or transformer == "passthrough" or isinstance(transformer, (StandardScaler, Bucketizer)):
        return one_each
    if isinstance(transformer, FunctionTransformer):
        return one_each if transformer.func in (None, _as_text) else None
    if isinstance(transformer, Pipeline):
        outputs = one_each
        width = n_inputs
        for _, step in transformer.steps:
            step_outputs = _outputs_by_input(step, width)
            if step_outputs is None:
                return None
            outputs = [np.sort(np.concatenate([step_outputs[k] for k in ks] or [np.array([], dtype=int)]))
                       for ks in outputs]
            width = sum(len(o) for o in step_outputs)
        return outputs
    if isinstance(transformer, SimpleImputer):
        statistics = transformer.statistics_
        if statistics.dtype.kind != "f" or len(statistics) != n_inputs:
            return None
        kept = np.ones(n_inputs, dtype=bool) if transformer.keep_empty_features else ~np.isnan(statistics)
        position = np.cumsum(kept) - 1
        outputs = [[position[k]] if kept[k] else [] for k in range(n_inputs)]
        indicator = getattr(transformer, "indicator_", None)
        if transformer.add_indicator and indicator is not None:
            for m, k in enumerate(indicator.features_):
                outputs[k].append(int(kept.sum()) + m)
        return [np.asarray(o, dtype=int) for o in outputs]
    if isinstance(transformer, OneHotEncoder):
        widths = getattr(transformer, "_n_features_outs", None)  # per input column, after grouping and drop
        if widths is None or len(widths) != n_inputs:
            return None
        starts = np.cumsum([0, *widths])
        return [np.arange(starts[k], starts[k + 1]) for k in range(n_inputs)]
    return None


def shuffled_copies(frame: pd.DataFrame, column: str, orders: list[np.ndarray]) -> pd.DataFrame:
    """len(orders) copies of `frame` stacked, copy r with `column` taken from rows `orders[r]`
    (its dtype kept)."""
    stacked = pd.concat([frame] * len(orders), ignore_index=True)
    values = frame[column].to_numpy()
    stacked[column] = pd.Series(np.concatenate([values[order] for order in orders]), dtype=frame[column].dtype)
    return stacked


class HoldoutFeatures:
    """A model's holdout rows as its estimator sees them (conformed, then the feature matrix),
    computed once, and `proba` of shuffled copies of a raw column from it.

    `of(model, X)` gives one when `model` is a pipeline of `Conform`, a ColumnTransformer with
    a dense result and the estimator; else None (the caller scores the copies through the whole
    model)."""

    def __init__(self, estimator, conformed: pd.DataFrame, matrix: np.ndarray,
                 blocks: list[tuple[object, list[str], slice, list[np.ndarray] | None]]):
        self.estimator = estimator
        self.conformed = conformed
        self.matrix = matrix
        self.blocks = blocks  # (fitted transformer, its raw columns, its output columns, outputs by input)

    @classmethod
    def of(cls, model, X: pd.DataFrame) -> HoldoutFeatures | None:
        if not isinstance(model, Pipeline) or len(model.steps) != 3:
            return None
        conform, features, estimator = (step for _, step in model.steps)
        if type(conform) is not Conform or not isinstance(features, ColumnTransformer):
            return None
        if features.sparse_output_ or (type(features) is not FeatureMatrix and type(features) is not ColumnTransformer):
            return None
        conformed = conform.transform(X)
        matrix = features.transform(conformed)
        if not isinstance(matrix, np.ndarray) or matrix.ndim != 2:
            return None
        blocks = []
        for name, transformer, columns in features.transformers_:
            if transformer == "drop":
                continue
            if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
                return None
            where = features.output_indices_[name]
            outputs = _outputs_by_input(transformer, len(columns))
            if outputs is not None and sum(len(o) for o in outputs) != where.stop - where.start:
                outputs = None
            blocks.append((transformer, columns, where, outputs))
        return cls(estimator, conformed, matrix, blocks)

    def baseline(self) -> np.ndarray:
        """The positive-class probability of the rows as they are (the `roc_auc` scorer's
        positive class: `classes_[1]`)."""
        return self.estimator.predict_proba(self.matrix)[:, 1]

    def proba(self, column: str, orders: list[np.ndarray]) -> np.ndarray:
        """Positive-class probabilities of len(orders) copies of the rows stacked, copy r with
        raw column `column` taken from rows `orders[r]`: what the whole model's `predict_proba`
        gives on that stacked frame."""
        n = len(self.matrix)
        stacked = np.tile(self.matrix, (len(orders), 1))
        for transformer, columns, where, outputs in self.blocks:
            if column not in columns:
                continue
            if outputs is not None:
                moved = where.start + outputs[columns.index(column)]
                for r, order in enumerate(orders):
                    stacked[r * n:(r + 1) * n, moved] = self.matrix[np.ix_(order, moved)]
                continue
            write_block(transformer.transform(shuffled_copies(self.conformed[columns], column, orders)),
                        stacked[:, where])
        return self.estimator.predict_proba(stacked)[:, 1]
