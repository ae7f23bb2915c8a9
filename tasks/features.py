"""The features stage's Prefect task: column roles and the (unfitted) feature transformer."""

from __future__ import annotations

from prefect import task

from mlpipe.core.config import FeaturesConfig
from mlpipe.model.features import build_preprocessor, feature_spec
from mlpipe.tasks.caching import cache_key


@task(name="features", cache_policy=cache_key("numeric", "categorical", "features"), persist_result=True,
      cache_result_in_memory=False)
def features_task(*, numeric: list[str], categorical: list[str], features: FeaturesConfig):
    """Decide column roles and build the (unfitted) feature transformer from config."""
    spec = feature_spec(numeric, categorical, features)
    return spec, build_preprocessor(spec, features)
