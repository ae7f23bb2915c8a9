"""mlpipe.core.config_model: the model and tuning sections, checked against the estimator families."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlpipe.core.config_model import ModelConfig, ParamSpace, TuningConfig, _default_spaces
from mlpipe.core.families import estimator_params, family_names


def test_every_built_in_search_space_names_parameters_of_its_estimator():
    # TuningConfig skips the estimator check for these names (so a default config imports no
    # sklearn): this is what makes skipping it safe.
    for family, space in _default_spaces().items():
        assert family in family_names()
        assert set(space) <= set(estimator_params(family)), family


def test_a_space_that_adds_an_unknown_parameter_is_refused_naming_it():
    space = {"hist_gradient_boosting": {"learning_rate": ParamSpace(type="float", low=0.1, high=0.2),
                                        "n_trees": ParamSpace(type="int", low=1, high=3)}}
    with pytest.raises(ValidationError, match=r"tuning\.spaces\.hist_gradient_boosting\.n_trees is not a parameter"):
        TuningConfig(spaces=space)
    with pytest.raises(ValidationError, match=r"tuning\.spaces\.catboost: unknown family"):
        TuningConfig(spaces={"catboost": {}})


def test_a_narrowed_built_in_space_is_accepted():
    narrowed = {"logistic_regression": {"C": ParamSpace(type="log_float", low=0.1, high=10.0)}}
    assert TuningConfig(spaces=narrowed).spaces["logistic_regression"]["C"].high == 10.0


@pytest.mark.parametrize(("space", "message"), [
    ({"type": "int", "low": 5, "high": 5}, "low"), ({"type": "log_float", "low": 0, "high": 1}, "low > 0"),
    ({"type": "categorical"}, "choices"), ({"type": "float", "low": 1}, "`low` and `high`")])
def test_param_space_bounds_are_checked(space, message):
    with pytest.raises(ValidationError, match=message):
        ParamSpace(**space)


def test_model_family_is_checked_against_the_registered_families_and_candidates_are_unique():
    # (unknown candidates and a blend without members: tests/unit/stages/test_training.py)
    with pytest.raises(ValidationError, match=r"unknown family 'catboost' \(allowed: auto, logistic_regression"):
        ModelConfig(family="catboost")
    with pytest.raises(ValidationError, match="listed twice"):
        ModelConfig(candidates=["random_forest", "random_forest"])


def test_the_ui_form_lists_auto_the_families_and_the_blend():
    choices = ModelConfig.model_json_schema()["properties"]["family"]["enum"]
    assert choices == ["auto", *family_names(), "soft_voting"]


def test_active_params_are_those_of_the_chosen_family():
    config = ModelConfig(family="logistic_regression", params={"logistic_regression": {"C": 0.5}})
    assert config.active_params == {"C": 0.5}
