"""mlpipe.core.config_sections: the data, split, features, evaluation, promotion and cache sections."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlpipe.core.config_sections import (
    BucketFeature,
    CacheConfig,
    CsvConfig,
    DataConfig,
    EvaluationConfig,
    PromotionConfig,
    SplitConfig,
)


def test_sections_forbid_unknown_keys_and_are_frozen():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        DataConfig(uri="x.csv", targett="y")
    config = SplitConfig()
    with pytest.raises(ValidationError):
        config.seed = 1


def test_defaults_describe_the_sample_churn_dataset():
    data = DataConfig()
    assert (data.uri, data.target, data.positive_label) == ("data/churn.csv", "churn", "Yes")
    assert SplitConfig().method == "hash" and SplitConfig().holdout_fraction == 0.2
    assert CacheConfig().enabled and CacheConfig().storage == "data/.cache"


@pytest.mark.parametrize(("options", "message"), [
    ({"delimiter": ";;"}, "one character"), ({"delimiter": '"'}, "one character"),
    ({"encoding": "klingon"}, "unknown encoding"), ({"delimiter": ",", "decimal": ","}, "both ','")])
def test_csv_options_are_checked(options, message):
    with pytest.raises(ValidationError, match=message):
        CsvConfig(**options)


def test_csv_tab_is_spelled_as_a_word_or_an_escape():
    assert CsvConfig(delimiter="tab").delimiter == CsvConfig(delimiter="\\t").delimiter == "\t"


def test_bucket_edges_must_strictly_increase():
    assert BucketFeature(name="b", column="c", edges=[1, 2.5]).edges == [1, 2.5]
    with pytest.raises(ValidationError, match="strictly increasing"):
        BucketFeature(name="b", column="c", edges=[2, 2])


def test_ranges_are_checked():
    with pytest.raises(ValidationError):
        SplitConfig(holdout_fraction=1.0)
    with pytest.raises(ValidationError):
        EvaluationConfig(cv_folds=1)
    with pytest.raises(ValidationError):
        PromotionConfig(metric="mae")
