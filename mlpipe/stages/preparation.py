"""The opening of a training run as plain function calls: read, validate, split, features."""

from __future__ import annotations

from typing import Any, NamedTuple

import pandas as pd

from mlpipe.core.config import PipelineConfig
from mlpipe.data.reader import fingerprint_dataset, read_dataset
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
    validated = validate_dataset(read_dataset(config.data.uri, config.data.format, config.data.csv), config.data)
    split = split_validated(validated, config.split)
    train, holdout = split.train, split.holdout
    spec = feature_spec(validated.report.numeric_features, validated.report.categorical_features, config.features)
    return PreparedRows(train, holdout, spec, build_preprocessor(spec, config.features), str(fingerprint))
