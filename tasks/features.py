"""The features stage's Prefect task: column roles and the (unfitted) feature transformer."""

from __future__ import annotations

from prefect import task

from mlpipe.core.config import FeaturesConfig
from mlpipe.model.features import build_preprocessor, feature_spec
from mlpipe.tasks.caching import cache_key


@task(name="features", cache_policy=cache_key("numeric", "categorical", "features", "na_values", "column_na_values"),
      persist_result=True, cache_result_in_memory=False)
def features_task(*, numeric: list[str], categorical: list[str], features: FeaturesConfig,
                  na_values: list[str] | None = None, column_na_values: dict[str, list[str]] | None = None):
    """Decide column roles and build the (unfitted) feature transformer from config. The
    missing-value tokens (data.na_values, and those validation found per column) go into the
    model's conform step, so it reads them as missing for every client."""
    spec = feature_spec(numeric, categorical, features, na_values or (), column_na_values)
    return spec, build_preprocessor(spec, features)
