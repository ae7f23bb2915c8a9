"""The opening the `train` and `tune` flows share: fingerprint -> load -> validate -> split ->
features, cached on the dataset fingerprint and the config sections each step uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from tasks.caching import step_key
from tasks.config import PipelineConfig
from tasks.data import fingerprint_task, load_task, split_task
from tasks.features import FeatureSpec
from tasks.memory import empty_like, releaser
from tasks.splitting import Split
from tasks.storage import DatasetFingerprint
from tasks.training import features_task
from tasks.validation import ValidatedData, validate_task


@dataclass
class PreparedData:
    """The validated, split data and the (unfitted) feature transformer a run fits on.
    `data_key` stands for the train rows in the cache keys of the steps that fit on them.
    `data.frame` is empty (its columns and dtypes kept): once split, every row lives on in
    `split`, and the whole table would be one more copy held for the rest of the run.
    `release` hands freed memory back between heavy steps, for a table large enough for it to
    matter (`tasks.memory.releaser`)."""

    fingerprint: DatasetFingerprint
    data: ValidatedData
    split: Split
    spec: FeatureSpec
    preprocessor: Any
    data_key: str
    release: Callable[[], None]


def prepare_data(config: PipelineConfig, cached) -> PreparedData:
    """fingerprint -> load -> validate -> split -> features; `cached` is the run's
    `tasks.caching.cached_steps`."""
    fingerprint = fingerprint_task(config.data)
    raw = cached(load_task)(fingerprint, config.data.format, config.data.csv)
    data = cached(validate_task)(raw, fingerprint, config.data, config.min_class_rows())
    raw = None  # the validated table is a new one: the file as read goes before the split copies its rows
    release = releaser(data.frame)
    release()
    split = split_task(data, config.split)
    data = replace(data, frame=empty_like(data.frame))
    spec, preprocessor = cached(features_task)(data.report.numeric_features, data.report.categorical_features,
                                               config.features)
    # What reading and validating freed, before the fits; after the last task of the opening,
    # whose finished runs hold parts of the validated table in reference cycles until then.
    release()
    data_key = step_key(fingerprint, config.data, config.split, config.features)
    return PreparedData(fingerprint, data, split, spec, preprocessor, data_key, release)

