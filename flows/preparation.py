"""The steps the `train` and `tune` flows share, composed of tasks only: the opening
(fingerprint -> load -> validate -> split -> features) and the model's choice ([select model]
-> [tune]). Each cached step keys on the dataset fingerprint and the config sections it uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlpipe.core.config import DataConfig, FeaturesConfig, ModelConfig, PipelineConfig, SplitConfig
from mlpipe.core.families import AUTO
from mlpipe.data.reader import DatasetFingerprint
from mlpipe.data.splitting import Split
from mlpipe.data.validation import ValidatedData
from mlpipe.model.features import FeatureSpec
from mlpipe.stages.training import candidate_families
from mlpipe.tasks.caching import step_key
from mlpipe.tasks.data import fingerprint_task, load_task, split_task
from mlpipe.tasks.features import features_task
from mlpipe.tasks.training import leaderboard_inputs, publish_leaderboard_task, select_model_task
from mlpipe.tasks.tuning import tune_task
from mlpipe.tasks.validation import validate_task


@dataclass
class PreparedData:
    """The validated, split data and the (unfitted) feature transformer a run fits on.
    `data.frame` is empty (its columns and dtypes kept): every row lives on in `split`.
    `data_key` stands for the train rows in the cache keys of the steps that fit on them."""

    fingerprint: DatasetFingerprint
    data: ValidatedData
    split: Split
    spec: FeatureSpec
    preprocessor: Any
    data_key: str

    @property
    def target(self) -> str:
        return self.data.target


@dataclass
class ModelChoice:
    """The model config a run fits (`model.family: auto` resolved), with what selection
    recorded: tags and the leaderboard for the run, and the picked model's fold scores when
    evaluation's cross-validation would fit that very model on the very same folds."""

    model: ModelConfig
    tags: dict[str, str] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    cv_scores: tuple[float, ...] | None = None


def prepare_data(*, data: DataConfig, split: SplitConfig, features: FeaturesConfig, min_class_rows: int,
                 cached) -> PreparedData:
    """fingerprint -> load -> validate -> split -> features; `cached` is the run's
    `mlpipe.tasks.caching.cached_steps`."""
    fingerprint = fingerprint_task(data=data)
    validated = cached(validate_task)(  # the table as read is an argument only: it goes once validated
        frame=cached(load_task)(fingerprint=fingerprint, fmt=data.format, csv=data.csv),
        fingerprint=fingerprint, data=data, min_class_rows=min_class_rows)
    rows = split_task(validated=validated, split=split)
    report = validated.report
    spec, preprocessor = cached(features_task)(
        numeric=report.numeric_features, categorical=report.categorical_features, features=features,
        na_values=list(data.na_values), column_na_values={c: sorted(t) for c, t in report.auto_na_values.items()})
    # The content's fingerprint, not the path: a byte-identical copy elsewhere reuses every fit.
    content = data.model_copy(update={"uri": ""})
    return PreparedData(fingerprint, validated, rows, spec, preprocessor,
                        data_key=step_key(fingerprint, content, split, features))


def choose_model(*, prepared: PreparedData, config: PipelineConfig, tune: bool, cached) -> ModelChoice:
    """[select model] -> [tune]: with `model.family: auto`, cross-validate the candidates on the
    train split and pick the best (or, unless a study follows, a blend of the top two); with
    `tune`, an Optuna study of the chosen family's parameters (its `tune_task`, cached)."""
    chosen = select_model(prepared=prepared, config=config, allow_blend=not tune, cached=cached)
    if not tune:
        return chosen
    tuning = cached(tune_task)(train=prepared.split.train, target=prepared.target, spec=prepared.spec,
                               preprocessor=prepared.preprocessor, model=chosen.model, tuning=config.tuning,
                               experiment=config.tracking.experiment, fingerprint=str(prepared.fingerprint),
                               data_key=prepared.data_key)
    # Evaluation refits its folds: the study's parameters are not the ones selection scored.
    return ModelChoice(tuning.model, {**chosen.tags, **tuning.tags()}, chosen.tables, cv_scores=None)


def select_model(*, prepared: PreparedData, config: PipelineConfig, allow_blend: bool, cached) -> ModelChoice:
    """`model.family: auto`: cross-validate the candidates on the train split and pick the best
    (or a blend of the top two, when `allow_blend`); any other family as configured."""
    if config.model.family != AUTO:
        return ModelChoice(config.model)
    selection = cached(select_model_task)(
        train=prepared.split.train, target=prepared.target, spec=prepared.spec, preprocessor=prepared.preprocessor,
        model=config.model, metric=config.promotion.metric, folds=config.evaluation.cv_folds,
        candidates=candidate_families(config.model), allow_blend=allow_blend, data_key=prepared.data_key,
        max_rows=config.evaluation.cv_max_rows, threads=config.compute.threads)
    publish_leaderboard_task(**leaderboard_inputs(selection))  # a cached selection publishes it too
    return ModelChoice(selection.model, selection.tags(), {"model_leaderboard": selection.table()},
                       selection.picked_cv_scores("roc_auc", config.evaluation.cv_folds, config.split.seed,
                                                  config.evaluation.cv_max_rows))
