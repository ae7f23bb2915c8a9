"""The model and tuning config sections: which estimator family, its parameters, and the search
space of each family's hyperparameters, all checked against mlpipe/core/families.py.

A Prefect-free kernel module. Building the defaults imports no scikit-learn: the built-in
search spaces are known to fit their estimators (a unit test checks them), so only spaces and
parameters a config sets are checked against the estimator classes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlpipe.core.config_sections import Section
from mlpipe.core.families import AUTO, BLEND, check_model_params, estimator_params, family_names


def _family_choices(schema: dict[str, Any]) -> None:
    """The UI form's drop-down: `auto` and the families registered when the schema is built."""
    schema["enum"] = [AUTO, *family_names(), BLEND]


class ModelConfig(Section):
    """Which estimator to fit, and with which parameters."""

    family: str = Field(
        AUTO, json_schema_extra=_family_choices,
        description="A model family; auto: cross-validate the candidates on the train split and keep the best; "
                    "soft_voting: average the probabilities of `members`",
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Estimator parameters per family, a JSON object of objects; the one of "
        "`family` is used (auto: each candidate's own), a family not named keeps the library's defaults. Example: "
        '{"random_forest": {"n_estimators": 200, "min_samples_leaf": 3}, "logistic_regression": {"C": 0.5}}'
    )
    candidates: list[str] | None = Field(
        None, description="Families `auto` compares, in this order (default: every registered candidate)"
    )
    selection_budget_s: float = Field(
        600.0, gt=0, description="auto: no further candidate is started once this many seconds have passed"
    )
    blend: bool = Field(
        True, description="auto: pick a soft-voting blend of the top two when it beats the best single family in CV"
    )
    members: list[str] | None = Field(None, description="soft_voting only: the families whose probabilities are averaged")
    seed: int = Field(42, description="Random state of every estimator, fold and sample")

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        if family not in (AUTO, BLEND) and family not in family_names():
            raise ValueError(f"unknown family {family!r} (allowed: {', '.join([AUTO, *family_names(), BLEND])})")
        return family

    @field_validator("candidates")
    @classmethod
    def _known_candidates(cls, candidates: list[str] | None) -> list[str] | None:
        if candidates is None:
            return None
        if not candidates:
            raise ValueError("give at least one family, or leave it unset for every registered one")
        unknown = [c for c in candidates if c not in family_names()]
        if unknown:
            raise ValueError(f"unknown family {unknown[0]!r} (allowed: {', '.join(family_names())})")
        if len(set(candidates)) != len(candidates):
            raise ValueError(f"a family is listed twice: {candidates}")
        return candidates

    @model_validator(mode="after")
    def _known_params(self) -> "ModelConfig":
        if self.family == "mlp" or "mlp" in (self.members or []):
            require_torch()
        for family, params in self.params.items():
            if family not in family_names():
                raise ValueError(f"model.params.{family}: unknown family (allowed: {', '.join(family_names())})")
            check_model_params(family, params)  # sklearn is imported here, on first use
        if self.family == BLEND:
            if not self.members or len(self.members) < 2:
                raise ValueError(f"model.members: {BLEND} needs two or more families (e.g. "
                                 "[logistic_regression, hist_gradient_boosting])")
            unknown = [m for m in self.members if m not in family_names()]
            if unknown:
                raise ValueError(f"model.members: unknown family {unknown[0]!r} (allowed: {', '.join(family_names())})")
        return self

    @property
    def active_params(self) -> dict[str, Any]:
        """The parameters of the selected family."""
        return dict(self.params.get(self.family, {}))


def require_torch() -> None:
    """The mlp family needs the optional torch extra; say how to install it."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise ValueError("model.family 'mlp' needs PyTorch, which is not installed: "
                         "pip install -e '.[torch]' (Python 3.11: a CPU build; on 3.12+ the extra "
                         "installs nothing, and a plain `pip install torch` takes PyPI's CUDA build, several GB)")


class ParamSpace(Section):
    """One hyperparameter's search range: int, float, log_float (log-uniform) or categorical."""

    type: Literal["int", "float", "log_float", "categorical"] = Field(description="How values are drawn")
    low: float | None = Field(None, description="Lowest value (int, float, log_float)")
    high: float | None = Field(None, description="Highest value (int, float, log_float)")
    step: float | None = Field(None, gt=0, description="int/float only: grid step")
    choices: list[Any] | None = Field(None, description="categorical only: the values tried")

    @model_validator(mode="after")
    def _bounds(self) -> "ParamSpace":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical space needs a non-empty `choices` list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} space needs `low` and `high`")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.type == "log_float" and self.low <= 0:
            raise ValueError(f"a log_float space needs low > 0 (got {self.low})")
        return self


def _default_spaces() -> dict[str, dict[str, ParamSpace]]:
    s = ParamSpace
    return {
        "hist_gradient_boosting": {
            "learning_rate": s(type="log_float", low=0.01, high=0.3),
            "max_leaf_nodes": s(type="int", low=7, high=63),
            "max_iter": s(type="int", low=50, high=400, step=50),
            "l2_regularization": s(type="log_float", low=1e-3, high=10.0),
            "min_samples_leaf": s(type="int", low=5, high=100),
        },
        "random_forest": {
            "n_estimators": s(type="int", low=100, high=500, step=100),
            "max_depth": s(type="int", low=3, high=20),
            "min_samples_leaf": s(type="int", low=1, high=20),
            "max_features": s(type="categorical", choices=["sqrt", "log2", 0.5]),
        },
        "logistic_regression": {
            "C": s(type="log_float", low=1e-3, high=100.0),
        },
        "xgboost": {
            "learning_rate": s(type="log_float", low=0.01, high=0.3),
            "max_depth": s(type="int", low=2, high=10),
            "n_estimators": s(type="int", low=50, high=500, step=50),
            "min_child_weight": s(type="log_float", low=0.1, high=20.0),
            "reg_lambda": s(type="log_float", low=1e-3, high=10.0),
            "subsample": s(type="float", low=0.5, high=1.0),
        },
        "lightgbm": {
            "learning_rate": s(type="log_float", low=0.01, high=0.3),
            "num_leaves": s(type="int", low=7, high=63),
            "n_estimators": s(type="int", low=50, high=500, step=50),
            "min_child_samples": s(type="int", low=5, high=100),
            "reg_lambda": s(type="log_float", low=1e-3, high=10.0),
            "colsample_bytree": s(type="float", low=0.5, high=1.0),
        },
        "mlp": {
            "learning_rate": s(type="log_float", low=1e-4, high=1e-2),
            "weight_decay": s(type="log_float", low=1e-6, high=1e-2),
            "dropout": s(type="float", low=0.0, high=0.3),
        },
    }


class TuningConfig(Section):
    """Optuna hyperparameter search over the selected model family's space."""

    enabled: bool = Field(False, description="Tune before fitting in `train`")
    trials: int = Field(30, ge=1, description="Finished trials (complete + pruned) in total, resumes included")
    timeout_s: float | None = Field(None, gt=0, description="Stop starting new trials after this many seconds")
    cv_folds: int = Field(3, ge=2, description="Stratified folds on the train split, reported for pruning")
    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = Field("roc_auc", description="What the study optimizes")
    pruner: Literal["median", "none"] = Field(
        "median", description="median: stop a trial whose fold scores fall below the median of earlier trials")
    seed: int = Field(42, description="Seed of the sampler (TPE)")
    workers: int = Field(1, ge=1, description="Parallel trial processes (local) or Ray tasks")
    backend: Literal["local", "ray"] = Field(
        "local", description="local: worker processes on this machine; ray: Ray tasks (RAY_ADDRESS or a local Ray)")
    threads_per_worker: int | None = Field(
        None, ge=1, description="BLAS/OpenMP threads per worker; default: cores // workers")
    storage: str | None = Field(
        None, description="Optuna storage URL (${VAR} taken from the environment, for passwords); "
                          "default sqlite:///<project>/data/.optuna/studies.db"
    )
    spaces: dict[str, dict[str, ParamSpace]] = Field(
        default_factory=_default_spaces, description="Per family, each tuned parameter's search space, a JSON "
        "object: family -> parameter -> {type: int|float|log_float|categorical, low, high, step, choices}; it "
        'replaces the built-in spaces. Example: {"random_forest": {"n_estimators": {"type": "int", "low": 100, '
        '"high": 500, "step": 100}, "max_features": {"type": "categorical", "choices": ["sqrt", 0.5]}}}')

    @model_validator(mode="after")
    def _known_params(self) -> "TuningConfig":
        for family, space in self.spaces.items():
            if family not in family_names():
                raise ValueError(f"tuning.spaces.{family}: unknown family (allowed: {', '.join(family_names())})")
            if set(space) <= set(_default_spaces().get(family, {})):
                continue  # names of the built-in space: known to fit (a unit test checks), no sklearn import
            unknown = set(space) - set(estimator_params(family))
            if unknown:
                raise ValueError(f"tuning.spaces.{family}.{sorted(unknown)[0]} is not a parameter of that model "
                                 f"(allowed: {', '.join(sorted(estimator_params(family)))})")
        return self
