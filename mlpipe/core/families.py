"""Estimator families: name -> estimator class, default parameters, simplicity rank.

A Prefect-free kernel module. Config checks `model.family` and `model.params` against it
without importing the training stage, and building the table imports nothing heavy: the
built-in families name their class by dotted path, imported on first use. A new family (an
optional extra, say) joins by calling `register_family`; it is then a valid `model.family`,
and a candidate of `model.family: auto` unless registered with `candidate=False`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

AUTO = "auto"  # model.family: pick among the candidates by cross-validation (mlpipe/stages/training.py)
BLEND = "soft_voting"  # model.family: the average of `model.members`' probabilities (one VotingClassifier)


@dataclass(frozen=True)
class EstimatorFamily:
    """One model family. `simplicity`: lower is simpler; model selection prefers the simpler of
    two families whose CV scores are within one standard error."""

    name: str
    estimator: type | str  # the class, or its dotted path (imported on first use)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    simplicity: int = 100
    candidate: bool = True
    ray_workers: int = 0  # with compute.backend: ray, the num_workers it trains on (Ray Train) unless params set it

    @property
    def estimator_class(self) -> type:
        if isinstance(self.estimator, type):
            return self.estimator
        module, _, name = self.estimator.rpartition(".")
        return getattr(importlib.import_module(module), name)


_FAMILIES: dict[str, EstimatorFamily] = {}


def register_family(name: str, estimator: type | str, defaults: Mapping[str, Any] | None = None, *,
                    simplicity: int = 100, candidate: bool = True, replace: bool = False,
                    ray_workers: int = 0) -> EstimatorFamily:
    """Make `name` a model family. `estimator` is a scikit-learn classifier class (with
    `predict_proba`) or its dotted path; `defaults` are the pipeline's defaults, which
    `model.params.<name>` overrides. Registering a taken name fails unless `replace`.
    `ray_workers`: with `compute.backend: ray`, the family's `num_workers` (data-parallel on Ray
    Train) when `model.params.<name>` does not set it."""
    if name in (AUTO, BLEND):
        raise ValueError(f"{name!r} is reserved for model selection")
    if name in _FAMILIES and not replace:
        raise ValueError(f"model family {name!r} is already registered")
    entry = EstimatorFamily(name, estimator, dict(defaults or {}), simplicity, candidate, ray_workers)
    _FAMILIES[name] = entry
    return entry


def family_names() -> list[str]:
    """Registered families, simplest first."""
    return [f.name for f in sorted(_FAMILIES.values(), key=lambda f: f.simplicity)]


def default_candidates() -> list[str]:
    """What `model.family: auto` tries when `model.candidates` is not set."""
    return [name for name in family_names() if _FAMILIES[name].candidate]


def get_family(name: str) -> EstimatorFamily:
    """The registered family `name`, or a ValueError listing the allowed names."""
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"model.family {name!r} is unknown (allowed: {', '.join([AUTO, *family_names()])})") from None


def estimator_params(family: str) -> list[str]:
    """The parameters `family`'s estimator accepts."""
    return sorted(get_family(family).estimator_class().get_params())


def check_model_params(family: str, params: dict[str, Any]) -> None:
    """Fail on parameters the estimator does not have or values it refuses, naming the key."""
    cls = get_family(family).estimator_class
    allowed = cls().get_params()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"model.params.{family}.{unknown[0]} is not a parameter of {cls.__name__} "
            f"(allowed: {', '.join(sorted(k for k in allowed if k != 'random_state'))})")
    for key, value in params.items():
        try:
            cls(**{key: value})._validate_params()  # sklearn's own constraint checks, without fitting
        except (ValueError, TypeError) as error:
            raise ValueError(f"model.params.{family}.{key}: {error}") from None


def make_estimator(family: str, params: Mapping[str, Any], seed: int):
    """The unfitted estimator of `family`: its defaults, then `params`, seeded unless `params`
    sets `random_state` itself."""
    entry = get_family(family)
    cls = entry.estimator_class
    merged = {**entry.defaults, **params}
    if "random_state" in cls().get_params():
        merged.setdefault("random_state", seed)
    return cls(**merged)


def make_blend(members: list[str], params: Mapping[str, Mapping[str, Any]], seed: int):
    """A soft-voting blend: each member family (with its params) fitted on the same features,
    their positive-class probabilities averaged. A plain sklearn VotingClassifier, so the model
    stays one Pipeline that skops saves and loads."""
    from sklearn.ensemble import VotingClassifier

    return VotingClassifier([(m, make_estimator(m, params.get(m, {}), seed)) for m in members], voting="soft")


# Defaults that suit tabular data of thousands to millions of rows; config params override them.
register_family("logistic_regression", "sklearn.linear_model.LogisticRegression",
                {"max_iter": 2000, "C": 1.0}, simplicity=10)
register_family("hist_gradient_boosting", "sklearn.ensemble.HistGradientBoostingClassifier",
                {"learning_rate": 0.05, "max_iter": 300, "max_leaf_nodes": 15, "l2_regularization": 1.0,
                 "early_stopping": False}, simplicity=20)
register_family("random_forest", "sklearn.ensemble.RandomForestClassifier",
                {"n_estimators": 100, "min_samples_leaf": 3, "n_jobs": 1}, simplicity=30)


# The boosting libraries' own models, wrapped (mlpipe/model/boosters.py: saved in their JSON/text formats, never
# pickled). Ranked after the scikit-learn trees (within one standard error, those need no extra library). Not
# default candidates until benchmarks/quality.py shows they pay for their time on the real tables.
register_family("xgboost", "mlpipe.model.boosters.XGBoostClassifier",
                {"n_estimators": 300, "learning_rate": 0.05, "max_depth": 4, "min_child_weight": 1.0,
                 "reg_lambda": 1.0}, simplicity=32, candidate=False, ray_workers=2)
register_family("lightgbm", "mlpipe.model.boosters.LightGBMClassifier",
                {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 20,
                 "reg_lambda": 1.0}, simplicity=34, candidate=False, ray_workers=2)


def torch_installed() -> bool:
    """Whether the optional torch extra is installed (`pip install -e '.[torch]'`)."""
    return importlib.util.find_spec("torch") is not None


# PyTorch on Ray Train (mlpipe/model/mlp.py imports neither until it fits; config refuses `mlp` without
# torch). Selection's folds train it in-process (no Ray Train per fold), so listing it in
# `model.candidates` works. It is not a default candidate: on the five real tables of
# benchmarks/quality.py, adding it lowered the default's mean holdout roc_auc (0.8589 -> 0.8562),
# and where it was picked the final fit's Ray Train start made the run 3-7x slower.
register_family("mlp", "mlpipe.model.mlp.MLPNetClassifier",
                {"hidden_layers": (64, 32), "epochs": 30, "patience": 5, "num_workers": 2},
                simplicity=40, candidate=False)
