"""Pipeline configuration: `PipelineConfig`, the whole config, and loading it from YAML with
`--set` overrides, with errors that name the key path.

Every section forbids unknown keys, so a typo fails at load time with its key path. The flow
takes `PipelineConfig` as its parameter, which is what lets the Prefect UI render and validate
the whole configuration as a form. The sections themselves live in mlpipe/core/config_sections.py
and mlpipe/core/config_model.py; they are re-exported here, so `from mlpipe.core.config import DataConfig`
is how the rest of the code names them.
"""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from mlpipe.core.config_model import ModelConfig, ParamSpace, TuningConfig, require_torch
from mlpipe.core.families import AUTO, BLEND, get_family
from mlpipe.core.config_sections import (
    CSV_DELIMITERS,
    LOWER_IS_BETTER,
    METRICS,
    BucketFeature,
    CacheConfig,
    ChangeFeature,
    ComputeConfig,
    ConfigError,
    CsvConfig,
    DataConfig,
    EvaluationConfig,
    FeaturesConfig,
    PromotionConfig,
    RatioFeature,
    Section,
    SplitConfig,
    TrackingConfig,
)

__all__ = ["BucketFeature", "CSV_DELIMITERS", "CacheConfig", "ChangeFeature", "ComputeConfig", "ConfigError",
           "CsvConfig", "DataConfig", "EvaluationConfig", "FeaturesConfig", "LOWER_IS_BETTER", "METRICS",
           "ModelConfig", "ParamSpace", "PipelineConfig", "PromotionConfig", "RatioFeature", "Section",
           "SplitConfig", "TrackingConfig", "TuningConfig", "apply_overrides", "build_config", "load_config",
           "require_torch"]


STREAMED_FAMILIES = ("xgboost", "lightgbm")  # the families `compute.stream` trains (on Ray Train)


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

    @model_validator(mode="after")
    def _ray_train_workers(self) -> "PipelineConfig":
        """With `compute.backend: ray`, a family that trains data-parallel on Ray Train (xgboost,
        lightgbm) gets its `num_workers` unless its params set one (0 keeps it in-process)."""
        if self.compute.backend != "ray":
            return self
        params = {family: dict(values) for family, values in self.model.params.items()}
        named = {self.model.family, *(self.model.members or []), *(self.model.candidates or [])} - {AUTO, BLEND}
        for family in sorted(named):
            workers = get_family(family).ray_workers
            if workers and "num_workers" not in params.get(family, {}):
                params[family] = {**params.get(family, {}), "num_workers": workers}
        if params != self.model.params:
            object.__setattr__(self, "model", self.model.model_copy(update={"params": params}))
        return self

    @model_validator(mode="after")
    def _streamed(self) -> "PipelineConfig":
        """`compute.stream` needs what the streamed path does: Ray, a booster family trained on
        Ray Train, and the hash split (a row's side from the row alone); no study, no `auto`."""
        if not self.compute.stream:
            return self
        problems = [
            *(["compute.backend must be ray"] if self.compute.backend != "ray" else []),
            *([f"model.family must be xgboost or lightgbm, not {self.model.family!r}"]
              if self.model.family not in STREAMED_FAMILIES else []),
            *(["split.method must be hash, without split.time_column"]
              if self.split.method != "hash" or self.split.time_column else []),
            *(["tuning.enabled must be off"] if self.tuning.enabled else []),
        ]
        if not problems and not self.model.active_params.get("num_workers"):
            problems.append(f"model.params.{self.model.family}.num_workers must be at least 1")
        if problems:
            raise ValueError("compute.stream: " + "; ".join(problems))
        return self

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
        if self.compute.stream:  # the streamed path fits the feature steps on a sample of this size
            payload["compute"] = {"stream": True, "stream_sample_rows": self.compute.stream_sample_rows}
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
