"""The opening of a training run as plain function calls: read, validate, split, features."""

from __future__ import annotations

from typing import Any, NamedTuple

import pandas as pd

from mlpipe.core.config import PipelineConfig
from mlpipe.data.reader import fingerprint_dataset, read_dataset, row_locator
from mlpipe.data.splitting import split_validated
from mlpipe.data.validation import validate_dataset
from mlpipe.model.features import FeatureSpec, build_preprocessor, feature_spec


class PreparedRows(NamedTuple):
    """The train and holdout rows of a dataset and the (unfitted) feature transformer."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    spec: FeatureSpec
    preprocessor: Any
    fingerprint: str


def prepare_rows(config: PipelineConfig) -> PreparedRows:
    """read -> validate -> split -> features as plain calls of the functions the data and
    features tasks wrap, without Prefect or its cache: for benchmarks and scripts. The `train`
    and `tune` flows run the same steps as cached tasks (flows/preparation.py)."""
    fingerprint = fingerprint_dataset(config.data.uri)
    data = config.data
    validated = validate_dataset(read_dataset(data.uri, data.format, data.csv), data,
                                 rows=row_locator(data.uri, data.format, data.csv))
    split = split_validated(validated, config.split)
    train, holdout = split.train, split.holdout
    report = validated.report
    spec = feature_spec(report.numeric_features, report.categorical_features, config.features, data.na_values,
                        {c: sorted(t) for c, t in report.auto_na_values.items()})
    return PreparedRows(train, holdout, spec, build_preprocessor(spec, config.features), str(fingerprint))
