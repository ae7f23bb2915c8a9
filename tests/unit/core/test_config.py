"""mlpipe.core.config: loading, --set overrides, error messages that name the key path, config_hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpipe.core.config import (
    BucketFeature,
    ConfigError,
    ModelConfig,
    PipelineConfig,
    apply_overrides,
    build_config,
    load_config,
)

CHURN_YAML = Path(__file__).resolve().parents[3] / "conf" / "churn.yaml"


def _error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(CHURN_YAML, overrides)
    return str(info.value)


# -- loading -----------------------------------------------------------------------------------

def test_load_churn_yaml():
    config = load_config(CHURN_YAML)
    assert isinstance(config, PipelineConfig)
    assert config.data.target == "churn"
    assert config.data.positive_label == "Yes"
    assert config.data.id_columns == ["customer_id"]
    assert config.model.family == "auto"
    assert config.model.candidates is None  # every registered family
    assert config.model.params["hist_gradient_boosting"] == {"learning_rate": 0.05, "max_iter": 250,
                                                             "max_leaf_nodes": 15}
    assert [b.edges for b in config.features.buckets] == [[12.0, 24.0, 48.0]]
    assert config.promotion.tolerance == pytest.approx(0.005)


def test_load_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listing)


def test_data_uri_argument_overrides_yaml():
    config = load_config(CHURN_YAML, data_uri="s3://bucket/other.parquet")
    assert config.data.uri == "s3://bucket/other.parquet"


# -- --set overrides -----------------------------------------------------------------------------

def test_apply_overrides_parses_yaml_scalars():
    raw = apply_overrides({"split": {"seed": 1}}, [
        "split.holdout_fraction=0.3",
        "split.stratify=false",
        "split.seed=7",
        "data.required_features=[a, b]",
        "split.time_column=null",
        "tracking.experiment=exp=1",  # only the first '=' splits
        "data.target=",
    ])
    assert raw["split"] == {"seed": 7, "holdout_fraction": 0.3, "stratify": False, "time_column": None}
    assert isinstance(raw["split"]["holdout_fraction"], float)
    assert raw["data"] == {"required_features": ["a", "b"], "target": ""}
    assert raw["tracking"] == {"experiment": "exp=1"}


def test_overrides_reach_validated_config():
    config = load_config(CHURN_YAML, ["split.holdout_fraction=0.3", "split.stratify=false",
                                      "evaluation.cv_folds=3"])
    assert config.split.holdout_fraction == pytest.approx(0.3)
    assert config.split.stratify is False
    assert config.evaluation.cv_folds == 3


def test_override_without_equals_fails():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["model.family"])


def test_override_into_a_value_fails():
    with pytest.raises(ConfigError, match="'seed' is a value"):
        apply_overrides({"split": {"seed": 1}}, ["split.seed.x=2"])


def test_override_yes_stays_a_string_label():
    config = load_config(CHURN_YAML, ["data.positive_label=Yes"])
    assert config.data.positive_label == "Yes"


# -- unknown keys ----------------------------------------------------------------------------------

def test_unknown_top_level_key_names_it_and_lists_sections():
    message = _error(["modle.family=random_forest"])
    assert "modle: unknown key" in message
    for section in ("data", "split", "features", "model", "evaluation", "promotion", "tracking", "cache"):
        assert section in message.split("allowed:")[1]


def test_unknown_nested_key_names_path_and_lists_allowed():
    message = _error(["data.targett=churn"])
    assert "data.targett: unknown key" in message
    allowed = message.split("allowed:")[1]
    assert "target" in allowed and "positive_label" in allowed and "min_rows" in allowed


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("split:\n  holdout: 0.2\n")
    with pytest.raises(ConfigError, match=r"split\.holdout: unknown key \(allowed: holdout_fraction, seed"):
        load_config(path)


def test_unknown_key_in_list_item_lists_allowed():
    message = _error(["features.ratios=[{name: r, numerator: a, denominater: b}]"])
    assert "features.ratios.0.denominater: unknown key" in message
    assert "allowed: name, numerator, denominator" in message


# -- wrong types and literals ---------------------------------------------------------------------

def test_wrong_literal_names_path_and_value():
    message = _error(["model.family=xgb"])
    assert "model.family" in message
    assert "'xgb'" in message
    assert "random_forest" in message


def test_wrong_type_names_path():
    message = _error(["split.seed=abc"])
    assert message.startswith("invalid config: split.seed:")
    assert "integer" in message


def test_out_of_range_value_names_path():
    assert "evaluation.threshold" in _error(["evaluation.threshold=1.5"])
    assert "data.min_rows" in _error(["data.min_rows=1"])


def test_every_failing_key_is_reported():
    message = _error(["split.seed=abc", "promotion.metric=auc"])
    assert "split.seed" in message and "promotion.metric" in message


# -- model params -----------------------------------------------------------------------------------

def test_unknown_model_param_names_full_path():
    message = _error(["model.params.random_forest.n_trees=3"])
    assert "model.params.random_forest.n_trees" in message
    assert "n_estimators" in message.split("allowed:")[1]


def test_invalid_model_param_value_fails():
    message = _error(["model.params.random_forest.n_estimators=-3"])
    assert "model.params.random_forest" in message
    assert "n_estimators" in message


def test_invalid_model_param_value_names_full_path():
    message = _error(["model.params.random_forest.n_estimators=-3"])
    assert "model.params.random_forest.n_estimators" in message


def test_params_of_an_unknown_family_fail():
    message = _error(["model.params.catboost.max_depth=3"])
    assert "model.params.catboost" in message


def test_invalid_param_of_an_inactive_family_still_fails():
    # logistic_regression is not the selected family, but its block is checked anyway
    message = _error(["model.params.logistic_regression.C=-1"])
    assert "model.params.logistic_regression" in message


def test_model_config_direct_construction_rejects_unknown_param():
    with pytest.raises(ValueError, match=r"model\.params\.logistic_regression\.penaltyy"):
        ModelConfig(family="logistic_regression", params={"logistic_regression": {"penaltyy": "l2"}})


# -- buckets ------------------------------------------------------------------------------------

@pytest.mark.parametrize("edges", ["[3, 2]", "[1, 1]", "[1, 5, 4]"])
def test_bucket_edges_must_increase(edges):
    message = _error([f"features.buckets=[{{name: b, column: tenure, edges: {edges}}}]"])
    assert "features.buckets.0.edges" in message
    assert "strictly increasing" in message


def test_bucket_edges_must_not_be_empty():
    with pytest.raises(ValueError):
        BucketFeature(name="b", column="tenure", edges=[])


# -- config_hash ------------------------------------------------------------------------------

def test_config_hash_is_stable():
    a, b = load_config(CHURN_YAML), load_config(CHURN_YAML)
    assert a.config_hash() == b.config_hash()
    assert len(a.config_hash()) == 16
    assert build_config(a.model_dump(mode="json")).config_hash() == a.config_hash()


def test_config_hash_changes_with_model_params():
    base = load_config(CHURN_YAML).config_hash()
    assert load_config(CHURN_YAML, ["model.params.hist_gradient_boosting.max_iter=80"]).config_hash() != base
    assert load_config(CHURN_YAML, ["model.seed=1"]).config_hash() != base
    assert load_config(CHURN_YAML, ["model.family=random_forest"]).config_hash() != base


def test_config_hash_ignores_cache_and_data_uri():
    base = load_config(CHURN_YAML).config_hash()
    moved = load_config(CHURN_YAML, ["cache.storage=s3://bucket/cache", "cache.enabled=false"],
                        data_uri="s3://bucket/churn.csv")
    assert moved.config_hash() == base
    # ...but the rest of the data section does count
    assert load_config(CHURN_YAML, ["data.target=label"]).config_hash() != base


def test_config_hash_counts_the_streamed_sample_only_when_streaming():
    """compute.* is how a model is computed, not which model, except under compute.stream: the
    feature steps are then fitted on a sample of compute.stream_sample_rows rows, so a rerun
    with another sample size or without streaming is another model, not a reuse."""
    stream = ["compute.backend=ray", "compute.stream=true", "model.family=xgboost"]
    local = load_config(CHURN_YAML, ["model.family=xgboost"]).config_hash()
    streamed = load_config(CHURN_YAML, stream).config_hash()
    assert streamed != local
    assert load_config(CHURN_YAML, [*stream, "compute.stream_sample_rows=5000"]).config_hash() != streamed
    assert load_config(CHURN_YAML, [*stream, "compute.ray_data_cpus=0.5"]).config_hash() == streamed
    assert load_config(CHURN_YAML, ["model.family=xgboost", "compute.stream_sample_rows=5000",
                                    "compute.threads=1"]).config_hash() == local  # no stream: unchanged


# -- family switch -----------------------------------------------------------------------------

def test_switching_family_picks_its_params():
    config = load_config(CHURN_YAML, ["model.family=random_forest"])
    assert config.model.family == "random_forest"
    assert config.model.active_params == {"n_estimators": 100, "min_samples_leaf": 3}
    config = load_config(CHURN_YAML, ["model.family=logistic_regression"])
    assert config.model.active_params == {"C": 1.0}


def test_family_without_params_block_has_no_active_params():
    config = ModelConfig(family="random_forest", params={"hist_gradient_boosting": {"max_iter": 5}})
    assert config.active_params == {}
    params = config.active_params
    params["n_estimators"] = 1  # a copy: mutating it does not touch the (frozen) config
    assert config.active_params == {}


# -- data.csv ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "delimiter"), [(",", ","), (";", ";"), ("|", "|"), ("tab", "\t"), ("\\t", "\t")])
def test_csv_delimiter_override_is_taken_as_text(value, delimiter):
    # YAML reads a bare `,` or `|` as syntax: a one-character override is the character itself
    assert load_config(CHURN_YAML, [f"data.csv.delimiter={value}"]).data.csv.delimiter == delimiter


def test_csv_options_default_to_detection_and_check_their_values():
    assert load_config(CHURN_YAML).data.csv.model_dump() == {"delimiter": "auto", "decimal": ".", "encoding": "utf-8"}
    assert "data.csv.encoding: unknown encoding 'klingon'" in _error(["data.csv.encoding=klingon"])
    assert "data.csv.delimiter: delimiter must be auto or one character" in _error(["data.csv.delimiter=;;"])
    assert "data.csv.quote: unknown key (allowed: delimiter, decimal, encoding)" in _error(["data.csv.quote=x"])
    assert "delimiter and decimal are both ','" in _error(["data.csv.delimiter=,", "data.csv.decimal=,"])


# -- compute ------------------------------------------------------------------------------------

def test_compute_backend_defaults_to_local_and_does_not_change_the_config_hash():
    local = load_config(CHURN_YAML)
    on_ray = load_config(CHURN_YAML, ["compute.backend=ray", "compute.max_retries=5"])
    assert local.compute.backend == "local" and on_ray.compute.backend == "ray"
    assert on_ray.config_hash() == local.config_hash()  # same numbers, same model lineage
    assert "compute.backend" in _error(["compute.backend=spark"]) and "'spark'" in _error(["compute.backend=spark"])


def test_compute_backend_ray_trains_the_boosters_on_ray_train_unless_their_params_say_otherwise():
    from mlpipe.core.config import load_config

    on_ray = load_config(CHURN_YAML, ["model.family=xgboost", "compute.backend=ray"])
    assert on_ray.model.active_params["num_workers"] == 2
    kept = load_config(CHURN_YAML, ["model.family=lightgbm", "compute.backend=ray",
                                                       "model.params.lightgbm.num_workers=0"])
    assert kept.model.active_params["num_workers"] == 0
    local = load_config(CHURN_YAML, ["model.family=xgboost"])
    assert "num_workers" not in local.model.active_params
    sklearn_family = load_config(CHURN_YAML, ["model.family=random_forest", "compute.backend=ray"])
    assert "num_workers" not in sklearn_family.model.active_params


def test_compute_stream_needs_ray_a_booster_on_ray_train_and_the_hash_split():
    from mlpipe.core.config import load_config

    streamed = load_config(CHURN_YAML, ["model.family=xgboost", "compute.backend=ray", "compute.stream=true"])
    assert streamed.compute.stream and streamed.model.active_params["num_workers"] == 2
    for overrides, problem in (
        (["model.family=xgboost"], "compute.backend must be ray"),
        (["compute.backend=ray", "model.family=random_forest"], "model.family must be xgboost or lightgbm"),
        (["compute.backend=ray", "model.family=lightgbm", "split.time_column=tenure"], "split.method must be hash"),
        (["compute.backend=ray", "model.family=xgboost", "tuning.enabled=true"], "tuning.enabled must be off"),
        (["compute.backend=ray", "model.family=xgboost", "model.params.xgboost.num_workers=0"],
         "num_workers must be at least 1"),
    ):
        assert problem in _error([*overrides, "compute.stream=true"]), overrides
