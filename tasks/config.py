"""Pipeline configuration: one pydantic model per section, loaded from YAML.

Every model forbids unknown keys, so a typo fails at load time with its key path. The flow
takes `PipelineConfig` as its parameter, which is what lets the Prefect UI render and
validate the whole configuration as a form.
"""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.families import AUTO, BLEND, check_model_params, estimator_params, family_names

METRICS = ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier")
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key path and the fix."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


CSV_DELIMITERS = (",", ";", "\t", "|")  # what detection chooses from, in order of preference


class CsvConfig(Section):
    """How a CSV file is written, when detection is not enough. Detection reads the first lines:
    the delimiter (one of `,` `;` tab `|`) and a byte-order mark."""

    delimiter: str = Field("auto", description="auto (detect , ; tab |), or the one character; 'tab' for a tab")
    decimal: Literal[".", ","] = Field(".", description="',' for a decimal comma (then ';' is the usual delimiter)")
    encoding: str = Field("utf-8", description="Text encoding of the file, e.g. latin-1 or cp1252")

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, delimiter: str) -> str:
        delimiter = "\t" if delimiter in ("tab", "\\t") else delimiter
        if delimiter != "auto" and (len(delimiter) != 1 or delimiter in "\"\r\n"):
            raise ValueError(f"delimiter must be auto or one character such as ; or tab, got {delimiter!r}")
        return delimiter

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        import codecs

        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
        return encoding

    @model_validator(mode="after")
    def _delimiter_is_not_the_decimal(self) -> "CsvConfig":
        if self.delimiter == self.decimal:
            raise ValueError(f"delimiter and decimal are both {self.decimal!r}: with a decimal comma the "
                             "delimiter is usually ';'")
        return self


class DataConfig(Section):
    """Where the dataset lives and what its columns mean."""

    uri: str = Field("data/churn.csv", description="Local path, file:// or s3:// URI")
    format: Literal["auto", "csv", "parquet"] = Field("auto", description="auto: by extension")
    csv: CsvConfig = Field(default_factory=CsvConfig, description="CSV dialect; detected by default")
    target: str = Field("churn", description="Binary target column")
    positive_label: str | int | bool | None = Field(
        "Yes", description="Target value that means the positive class (None: target is 0/1)"
    )
    id_columns: list[str] = Field(default_factory=list, description="Never used as features")
    drop_columns: list[str] = Field(default_factory=list, description="Ignored entirely")
    required_features: list[str] = Field(default_factory=list, description="Must be present")
    min_rows: int = Field(200, ge=2, description="Fewer rows than this fail validation")
    leak_threshold: float = Field(
        0.995, gt=0.5, le=1, description="A column that alone separates the classes this well is refused as a leak"
    )
    id_unique_ratio: float = Field(
        1.0, gt=0, le=1, description="Text or integer columns with this share of unique values are IDs"
    )


class SplitConfig(Section):
    """How the holdout is carved out of the data."""

    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(42, description="Seed of the random split; salt of the hash split")
    stratify: bool = Field(True, description="random split only: keep the class balance in both sides")
    time_column: str | None = Field(None, description="Holdout = latest rows by this column (overrides method)")
    method: Literal["hash", "random"] = Field(
        "hash", description="hash: a row's side is a hash of its ID columns (else its content), stable across "
                            "snapshots; random: seeded and stratified (not comparable across snapshots)")


class RatioFeature(Section):
    """numerator / denominator, missing where the denominator is 0 or missing."""

    name: str
    numerator: str
    denominator: str


class ChangeFeature(Section):
    """(previous - current) / previous: the share lost since `previous` (negative for growth),
    missing where `previous` is 0 or missing."""

    name: str
    previous: str
    current: str


class BucketFeature(Section):
    """A numeric column cut at fixed edges into one-hot encoded buckets."""

    name: str
    column: str
    edges: list[float] = Field(min_length=1)

    @field_validator("edges")
    @classmethod
    def _increasing(cls, edges: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"edges must be strictly increasing, got {edges}")
        return edges


class FeaturesConfig(Section):
    """How raw columns become model inputs."""

    numeric_impute: Literal["median", "mean"] = "median"
    scale_numeric: bool = True
    max_categories: int | None = Field(
        30, ge=2, description="Rarer categories are grouped into one 'infrequent' column"
    )
    min_category_frequency: float | None = Field(
        0.005, gt=0, lt=1,
        description="Categories seen in fewer than this share of the train rows join the 'infrequent' column",
    )
    missing_indicators: bool = Field(
        True, description="A 0/1 column per numeric column that has gaps in the train rows (linear models "
                          "cannot tell an imputed value from a real one otherwise)",
    )
    ratios: list[RatioFeature] = Field(default_factory=list)
    changes: list[ChangeFeature] = Field(default_factory=list)
    buckets: list[BucketFeature] = Field(default_factory=list)


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
        default_factory=dict, description="Estimator parameters per family; the one of `family` is used"
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
    seed: int = 42

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
                         "pip install -e '.[torch]'")


class ComputeConfig(Section):
    """Where the heavy steps run: in this process, or as Ray tasks (a local Ray, or the
    cluster at RAY_ADDRESS). Both give the same numbers."""

    backend: Literal["local", "ray"] = Field("local", description="ray: CV folds and permutation importance as Ray tasks")
    max_retries: int = Field(2, ge=0, description="Ray retries of a task whose worker or node died")


class EvaluationConfig(Section):
    """How the model is scored."""

    cv_folds: int = Field(5, ge=2)
    permutation_repeats: int = Field(5, ge=1)
    threshold: float = Field(0.5, gt=0, lt=1, description="Probability cut for the label")
    cv_max_rows: int | None = Field(
        50_000, ge=100, description="Cross-validate on a stratified sample of at most this many train rows "
                                    "(empty: all); the CV score's spread is already well under 0.005 there")
    importance_max_rows: int | None = Field(
        10_000, ge=100, description="Permutation importance on a stratified sample of at most this many "
                                    "holdout rows (empty: all)")


class PromotionConfig(Section):
    """When a new model version becomes `champion`."""

    metric: Literal["roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"] = (
        "roc_auc"
    )
    min_value: float = Field(0.75, description="Absolute gate (a maximum for log_loss/brier)")
    tolerance: float = Field(
        0.0, ge=0, description="How much worse than the champion, both scored on rows neither trained on"
    )
    min_comparison_rows: int = Field(
        100, ge=1, description="Fewest rows neither model trained on for a champion comparison to count")
    min_comparison_positives: int = Field(
        10, ge=1, description="Fewest positive (and negative) rows in that comparison set")
    when_incomparable: Literal["keep_champion", "promote_on_gate"] = Field(
        "keep_champion", description="When the comparison set is too small or the champion's training rows are "
                                     "unknown: keep the champion (candidate -> challenger), or promote a "
                                     "candidate that passes the absolute gate")


class TrackingConfig(Section):
    """MLflow experiment and registered model. The tracking URI comes from the environment."""

    experiment: str = "churn"
    model_name: str = "churn-classifier"


class ParamSpace(Section):
    """One hyperparameter's search range: int, float, log_float (log-uniform) or categorical."""

    type: Literal["int", "float", "log_float", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = Field(None, gt=0, description="int/float only: grid step")
    choices: list[Any] | None = None

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
    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = "roc_auc"
    pruner: Literal["median", "none"] = "median"
    seed: int = 42
    workers: int = Field(1, ge=1, description="Parallel trial processes (local) or Ray tasks")
    backend: Literal["local", "ray"] = "local"
    threads_per_worker: int | None = Field(
        None, ge=1, description="BLAS/OpenMP threads per worker; default: cores // workers")
    storage: str | None = Field(
        None, description="Optuna storage URL (${VAR} taken from the environment, for passwords); "
                          "default sqlite:///<project>/data/.optuna/studies.db"
    )
    spaces: dict[str, dict[str, ParamSpace]] = Field(default_factory=_default_spaces)

    @model_validator(mode="after")
    def _known_params(self) -> "TuningConfig":
        for family, space in self.spaces.items():
            if family not in family_names():
                raise ValueError(f"tuning.spaces.{family}: unknown family (allowed: {', '.join(family_names())})")
            unknown = set(space) - set(estimator_params(family))
            if unknown:
                raise ValueError(f"tuning.spaces.{family}.{sorted(unknown)[0]} is not a parameter of that model "
                                 f"(allowed: {', '.join(sorted(estimator_params(family)))})")
        return self


class CacheConfig(Section):
    """Where cached task results are persisted."""

    enabled: bool = True
    storage: str = Field(
        "data/.cache",
        description="Local folder, an s3:// prefix, or block:<type>/<name> for a saved Prefect storage block",
    )


class PipelineConfig(Section):
    """The whole training pipeline."""

    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)

    def min_class_rows(self) -> int:
        """Rows each class needs: one per CV fold (training and tuning) in the train split,
        plus at least one in the holdout."""
        folds = max(self.evaluation.cv_folds, self.tuning.cv_folds if self.tuning.enabled else 0)
        return int(np.ceil(folds / (1 - self.split.holdout_fraction))) + 1

    def with_data(self, data: DataConfig) -> "PipelineConfig":
        """This config with another data section (e.g. a prefix resolved to its newest object)."""
        return self.model_copy(update={"data": data})

    def with_model(self, model: ModelConfig) -> "PipelineConfig":
        """This config with another model section (e.g. the tuned parameters)."""
        return self.model_copy(update={"model": model})

    def config_hash(self) -> str:
        """Hash of everything that determines the model (not where results are cached)."""
        payload = self.model_dump(mode="json", exclude={"cache": True, "compute": True, "data": {"uri"},
                                                        "tuning": {"workers", "backend", "storage", "timeout_s",
                                                                   "threads_per_worker"}})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def flat_params(self) -> dict[str, str]:
        """The config as `section.key` -> string, for MLflow params."""
        return {k: v for k, v in _flatten(self.model_dump(mode="json")).items()}


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): json.dumps(value) if not isinstance(value, str) else value}


def _parse_value(text: str) -> Any:
    """`--set` values are YAML scalars: 0.8 -> float, true -> bool, [1, 2] -> list."""
    if text == "":
        return ""
    if len(text) == 1 and not text.isalnum():  # a delimiter (, ; |): YAML would read it as syntax
        return text
    value = yaml.safe_load(text)
    # YAML 1.1 reads yes/no/on/off as booleans; only true/false should be (positive_label=Yes).
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        return text
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` overrides to a raw config mapping (before validation)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. model.family=random_forest")
        path, value = item.split("=", 1)
        keys = path.strip().split(".")
        node = raw
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {path}: {key!r} is a value, not a section")
            node = child
        node[keys[-1]] = _parse_value(value)
    return raw


def _format_error(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key" + _allowed_keys(err["loc"])
        elif err["type"] == "literal_error":
            message = f"{message} (got {err['input']!r})"
        parts.append(message if message.startswith(path + ".") else f"{path}: {message}")
    return "; ".join(parts)


def _allowed_keys(loc: tuple) -> str:
    model: type[BaseModel] = PipelineConfig
    for key in loc[:-1]:
        if isinstance(key, int):  # an item of a list section (features.ratios.0.name)
            continue
        field = model.model_fields.get(str(key))
        annotation = getattr(field, "annotation", None)
        if typing.get_origin(annotation) is list:
            annotation = typing.get_args(annotation)[0]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    return f" (allowed: {', '.join(model.model_fields)})"


def build_config(raw: dict[str, Any]) -> PipelineConfig:
    """Validate a raw mapping into a `PipelineConfig`, or raise `ConfigError` naming the keys."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"invalid config: {_format_error(error)}") from None


def load_config(path: str | Path, overrides: list[str] | None = None, data_uri: str | None = None) -> PipelineConfig:
    """Load a YAML config, apply `--set` overrides and an optional data URI, and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    if data_uri:
        raw.setdefault("data", {})["uri"] = data_uri
    return build_config(raw)
